"""Train the shipped predictor: `python -m budsim.train [--seed 0]`.

Fits the per-runtime roofline calibration and the two XGBoost corrections (TTFT, TPOT) on every usable agg row of
silicon_sample.csv (found by `budsim.dataset.perf_data_dir`, or given with --data) and writes, under
budsim/artifacts/ (or --out):

* predictor.json: the two boosters in XGBoost's own JSON model format ({"ttft": <model>, "tpot": <model>});
* predictor.meta.json: data hash, seed, kernel-profile hash, feature names, calibrations, booster parameters,
  training-fit metrics.

The roofline it corrects uses the per-GPU kernel profiles (budsim/artifacts/kernels.json from
`python -m budsim.kernel_fit`); refit those first when the kernel tables change.

Same data + same seed gives byte-identical files (XGBoost's hist method is deterministic for a fixed seed and
thread count). Nothing is pickled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from budsim.dataset import SILICON_CSV, PerfDataMissing, data_hash, load_samples
from budsim.features import FEATURE_NAMES
from budsim.fitting import BOOSTER_PARAMS, NUM_ROUNDS, booster_to_json, fit
from budsim.kernels import ARTIFACT as KERNEL_PROFILES
from budsim.kernels import profiles_hash
from budsim.roofline import physics

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
FORMAT = "budsim-predictor/1"


def train(seed: int, out_dir: Path, data: Path | None = None) -> dict:
    """Fit on `data` (default: the measured silicon_sample.csv) and write both artifact files into `out_dir`."""
    samples, skipped = load_samples(data)
    phys = [physics(s.point) for s in samples]
    fitted = fit(samples, seed, phys)
    ttft, tpot, _ = fitted.predict_points([s.point for s in samples], phys)
    measured_ttft = np.array([s.ttft_ms for s in samples])
    measured_tpot = np.array([s.tpot_ms for s in samples])
    metrics = {
        "note": "fit on the training rows themselves; see accuracy.md for held-out (leave-group-out) accuracy",
        "train_tpot_mape": float(np.mean(np.abs(tpot - measured_tpot) / measured_tpot) * 100),
        "train_ttft_mape": float(np.mean(np.abs(ttft - measured_ttft) / measured_ttft) * 100),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    model = {
        "format": FORMAT,
        "ttft": booster_to_json(fitted.ttft_booster),
        "tpot": booster_to_json(fitted.tpot_booster),
    }
    (out_dir / "predictor.json").write_text(json.dumps(model, sort_keys=True, separators=(",", ":")))
    meta = {
        "format": FORMAT,
        "data": {
            "file": SILICON_CSV if data is None else data.name,
            "hash": data_hash(data),
            "rows": len(samples),
            "skipped": skipped,
            "groups": len({s.group for s in samples}),
        },
        "seed": seed,
        # the roofline the boosters correct depends on the kernel profiles: refit both together
        "kernel_profiles": {"file": KERNEL_PROFILES.name, "hash": profiles_hash()},
        "features": FEATURE_NAMES,
        "target": "log(measured / roofline) for TTFT and TPOT",
        "calibrations": fitted.calibrations.to_json(),
        "booster_params": BOOSTER_PARAMS,
        "num_rounds": NUM_ROUNDS,
        "metrics": metrics,
    }
    (out_dir / "predictor.meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the budsim predictor on the measured perf data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR)
    parser.add_argument("--data", type=Path, help=f"a CSV in silicon_sample.csv's columns (default: {SILICON_CSV} "
                        "under the measured-data folder)")
    args = parser.parse_args()
    try:
        meta = train(args.seed, args.out, args.data)
    except PerfDataMissing as error:
        raise SystemExit(str(error)) from None
    print(
        f"trained on {meta['data']['rows']} rows ({meta['data']['groups']} groups); "
        f"fit TPOT MAPE {meta['metrics']['train_tpot_mape']:.1f} %, TTFT MAPE {meta['metrics']['train_ttft_mape']:.1f} %"
    )
    print(f"calibrations: {meta['calibrations']}")
    print(f"wrote {args.out / 'predictor.json'} and predictor.meta.json")


if __name__ == "__main__":
    main()
