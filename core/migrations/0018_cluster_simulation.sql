-- How a local cluster's simulated GPUs differ from the optimizer's uncalibrated model ({ttft_scale, tpot_scale,
-- batch_scale}); NULL: they run at the predicted speed. Used only where no measured silicon profile covers the model.
ALTER TABLE clusters ADD COLUMN simulation jsonb;
