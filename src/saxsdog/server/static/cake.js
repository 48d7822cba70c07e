// Cake maps (I versus radial and azimuth χ) of the latest result, as small images under the
// Plots tab's curve. A result's graph of kind "Cake" carries `cake`: the map averaged in blocks
// to a few hundred pixels (shape of the full map, χ and radial block centres, z rows per χ,
// null where a block holds no data). χ is clockwise from 3 o'clock on the image as read (pyFAI's χ).

import { $, el } from "./dom.js";
import { plainLabel } from "./plots.js";

/** χ centres of a sector as a continuous axis: a wrap-around sector ([170, -170]: centres
 * 172.5 … 177.5, -177.5 … -172.5) runs on past 180° so the rows stay in order (pure). */
export function continuousChi(chi) {
  const out = [];
  let turn = 0;
  chi.forEach((v, i) => {
    if (i > 0 && v + turn < out[i - 1]) turn += 360;  // bins grow clockwise: a drop is the wrap
    out.push(v + turn);
  });
  return out;
}

/** Plotly heatmap trace and layout of one cake graph (pure: unit-tested). */
export function cakeFigure(g, logz = false) {
  const c = g.cake;
  const z = c.z.map(row => row.map(v => (v === null || (logz && !(v > 0))) ? null : (logz ? Math.log10(v) : v)));
  const chi = continuousChi(c.chi);
  const xlabel = g.columnLabels && g.columnLabels[0] ? plainLabel(g.columnLabels[0]) : c.unit;
  const name = (g.conf && g.conf.Name) ? ` (${g.conf.Name})` : "";
  return {
    trace: { type: "heatmap", x: c.radial, y: chi, z, colorscale: "Viridis", hoverongaps: false,
      colorbar: { title: { text: logz ? "log₁₀ I" : "I" }, thickness: 10 } },
    layout: {
      title: { text: `cake ${c.shape[0]} × ${c.shape[1]}${name}`, font: { size: 12 } },
      margin: { l: 55, r: 10, t: 28, b: 40 }, height: 260,
      xaxis: { title: { text: xlabel } },
      yaxis: { title: { text: "χ [deg], clockwise" }, autorange: "reversed" },
    },
  };
}

/** Draw every cake of the latest result below the curve plot (nothing when there is none). */
export function drawCakes(m, logz = false) {
  const cakes = ((m && m.graphs) || []).filter(g => g && g.cake);
  let box = $("#plot-cakes");
  if (!box) {
    const main = $("#plot-main");
    if (!main) return;
    box = el("div", { id: "plot-cakes" });
    main.after(box);
  }
  if (!cakes.length || !window.Plotly) { box.replaceChildren(); return; }
  while (box.children.length > cakes.length) box.lastChild.remove();
  cakes.forEach((g, i) => {
    let div = box.children[i];
    if (!div) { div = el("div", { class: "plot cake" }); box.append(div); }
    const { trace, layout } = cakeFigure(g, logz);
    Plotly.react(div, [trace], layout, { displaylogo: false, responsive: true });
  });
}
