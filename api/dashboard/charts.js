// Inline SVG charts for the dashboard: axes with values and units, no library.

const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// Round tick values covering [min, max]: 1, 2 or 5 times a power of ten apart.
export function niceTicks(min, max, count = 5) {
  if (!(max > min)) { const pad = Math.abs(min) * 0.1 || 1; [min, max] = [min - pad, max + pad]; }
  const raw = (max - min) / count, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.floor(min / step) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}

export function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || !Number.isFinite(value)) return "not measured";
  const size = Math.abs(value);
  if (size >= 1e9) return `${(value / 1e9).toPrecision(digits)} G`;
  if (size >= 1e6) return `${(value / 1e6).toPrecision(digits)} M`;
  if (size >= 1e4) return `${(value / 1e3).toPrecision(digits)} k`;
  if (size >= 100 || Number.isInteger(value)) return String(Math.round(value));
  return String(Number(value.toPrecision(digits)));
}

const clock = (seconds) => new Date(seconds * 1000).toTimeString().slice(0, 5);

function frame({ width, height, left, bottom, xTicks, yTicks, sx, sy, xLabel, yLabel, xFormat, yFormat }) {
  const top = 12, right = 14;
  const grid = yTicks.map((t) => `<line class="grid" x1="${left}" x2="${width - right}" y1="${sy(t)}" y2="${sy(t)}"/>
    <text class="tick" x="${left - 6}" y="${sy(t) + 4}" text-anchor="end">${esc(yFormat(t))}</text>`).join("");
  const xs = xTicks.map((t) => `<line class="axis" x1="${sx(t)}" x2="${sx(t)}" y1="${height - bottom}" y2="${height - bottom + 4}"/>
    <text class="tick" x="${sx(t)}" y="${height - bottom + 17}" text-anchor="middle">${esc(xFormat(t))}</text>`).join("");
  return `${grid}${xs}
    <line class="axis" x1="${left}" x2="${width - right}" y1="${height - bottom}" y2="${height - bottom}"/>
    <line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${height - bottom}"/>
    <text class="label" x="${(left + width - right) / 2}" y="${height - 4}" text-anchor="middle">${esc(xLabel)}</text>
    <text class="label" x="13" y="${(top + height - bottom) / 2}" transform="rotate(-90 13 ${(top + height - bottom) / 2})"
      text-anchor="middle">${esc(yLabel)}</text>`;
}

// One metric over time. points: [[unix seconds, value]]; threshold: an alert line drawn across.
// integer: counts (replicas), ticked in whole numbers.
export function lineChart({ title, unit, points, start, end, threshold, integer = false, width = 420, height = 200 }) {
  const left = 58, bottom = 40, top = 12, right = 14;
  const values = points.map((p) => p[1]).concat(threshold === undefined || threshold === null ? [] : [threshold]);
  const highest = Math.max(...values, 0) || 1;
  const yTicks = integer ? niceTicks(0, Math.max(Math.ceil(highest), 2), Math.min(4, Math.max(Math.ceil(highest), 2))).filter(Number.isInteger)
    : niceTicks(0, highest, 4);
  const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (t) => left + ((t - start) / ((end - start) || 1)) * (width - left - right);
  const sy = (v) => height - bottom - ((v - y0) / ((y1 - y0) || 1)) * (height - bottom - top);
  const span = end - start, stepS = [60, 120, 300, 600, 1800, 3600, 7200].find((s) => span / s <= 6) || 14400;
  const xTicks = [];
  for (let t = Math.ceil(start / stepS) * stepS; t <= end; t += stepS) xTicks.push(t);
  // A gap longer than three steps is drawn as a gap, not a line across it.
  const gap = points.length > 1 ? 3 * Math.min(...points.slice(1).map((p, i) => p[0] - points[i][0])) : Infinity;
  const path = points.map((p, i) => `${i && p[0] - points[i - 1][0] <= gap ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
  const last = points.length ? points[points.length - 1][1] : null;
  const body = points.length
    ? `<path class="series" d="${path}"/>${points.length === 1 ? `<circle class="series-dot" cx="${sx(points[0][0])}" cy="${sy(points[0][1])}" r="3"/>` : ""}`
    : `<text class="empty" x="${(left + width - right) / 2}" y="${height / 2}" text-anchor="middle">not measured in this range</text>`;
  const limit = threshold === undefined || threshold === null ? ""
    : `<line class="threshold" x1="${left}" x2="${width - right}" y1="${sy(threshold)}" y2="${sy(threshold)}"><title>alert above ${esc(formatNumber(threshold))} ${esc(unit)}</title></line>`;
  return `<figure class="chart" data-metric="${esc(title)}"><figcaption>${esc(title)} <b>${esc(last === null ? "not measured" : `${formatNumber(last)} ${unit}`)}</b></figcaption>
    <svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">
    ${frame({ width, height, left, bottom, xTicks, yTicks, sx, sy, xLabel: "time", yLabel: unit, xFormat: clock, yFormat: formatNumber })}
    ${limit}${body}</svg></figure>`;
}

// A scatter of points {x, y, label, chosen, details}; the chosen one is drawn larger, ringed and named.
export function scatterPlot({ points, xLabel, yLabel, width = 620, height = 320 }) {
  const left = 64, bottom = 44, top = 12, right = 18;
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  const xTicks = niceTicks(Math.min(...xs), Math.max(...xs), 6), yTicks = niceTicks(Math.min(...ys), Math.max(...ys), 5);
  const [x0, x1, y0, y1] = [xTicks[0], xTicks[xTicks.length - 1], yTicks[0], yTicks[yTicks.length - 1]];
  const sx = (x) => left + ((x - x0) / ((x1 - x0) || 1)) * (width - left - right);
  const sy = (y) => height - bottom - ((y - y0) / ((y1 - y0) || 1)) * (height - bottom - top);
  const dots = points.map((p, i) => `<g class="point${p.chosen ? " chosen" : ""}" data-index="${i}">
      <circle cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="${p.chosen ? 8 : 5}"><title>${esc(p.details)}</title></circle>
      ${p.chosen ? `<circle class="ring" cx="${sx(p.x).toFixed(1)}" cy="${sy(p.y).toFixed(1)}" r="13"/>
      ${chosenLabel(sx(p.x), sy(p.y), p.label)}` : ""}</g>`).join("");
  // The label sits on the side of the point with room for it.
  function chosenLabel(x, y, label) {
    const leftSide = x > width * 0.55, below = y < top + 24;
    return `<text class="chosen-label" x="${(leftSide ? x - 16 : x + 16).toFixed(1)}" y="${(below ? y + 24 : y - 10).toFixed(1)}"
      text-anchor="${leftSide ? "end" : "start"}">chosen: ${esc(label)}</text>`;
  }
  return `<svg class="scatter" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(yLabel)} against ${esc(xLabel)}">
    ${frame({ width, height, left, bottom, xTicks, yTicks, sx, sy, xLabel, yLabel, xFormat: formatNumber, yFormat: formatNumber })}
    ${dots}</svg>`;
}
