// The page's shared state: one object, owned by app.js and read by the tab modules.

export const S = {
  schema: null,         // the calibration JSON Schema
  cal: null,            // the calibration being edited
  maskFiles: {},        // mask index -> {name, data (base64), size}
  clientErrors: {},     // JSON path -> message (checks in the page)
  serverErrors: {},     // JSON path -> [messages] (from /api/validate)
  stat: null,
  running: false,
  latest: null,         // the latest result message (curves)
  statSamples: [],      // [{t, fps, processed, queue}]
  activeTab: "calibration",
};
