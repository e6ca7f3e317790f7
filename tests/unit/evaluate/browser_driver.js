// Runs browse.html's own script in node against a report directory, with a minimal stand-in for
// the DOM: data scripts are executed the way a browser would (a <script src> per file).
// Usage: node browser_driver.js REPORT_DIR ROUND RECORD_ID [FILTERS_JSON]
// Prints JSON: {status, rows, detail, loaded, ready_ms, open_ms}: the first page (and the time to
// draw it: reading the manifest and the round's index, filtering, the table), then the record
// opened (and the time to load its chunks and draw it). bench/report_browser.py uses the times.
"use strict";
const fs = require("fs"), path = require("path"), vm = require("vm");
const [dir, round, recordId, filtersJson] = process.argv.slice(2);
const html = fs.readFileSync(path.join(dir, "browse.html"), "utf8");
const code = html.match(/<script>([\s\S]*)<\/script>/)[1];
const elements = {};
const defaults = {"f-round": round, "f-kind": "-1", "f-verdict": "", "f-min": "", "f-max": "", "f-sort": "", "f-text": "",
                  ...JSON.parse(filtersJson || "{}")};
const loaded = [];
function element(id) {
  if (!elements[id]) {
    elements[id] = {id, value: defaults[id] ?? "", innerHTML: "", textContent: "", dataset: {}, options: [],
      add(o) { this.options.push(o); }, querySelectorAll: () => [], scrollIntoView() {}};
  }
  return elements[id];
}
const context = {
  console, performance, Promise, Map, Set, Math, JSON, Array, String, Number, RegExp, Error, encodeURIComponent, decodeURIComponent,
  location: {hash: ""}, history: {replaceState() {}},
  Option: function (text, value) { this.text = text; this.value = value; },
  document: {
    body: {dataset: {}},
    getElementById: element,
    createElement: () => ({}),
    head: {appendChild(s) {  // a <script src>: run the file, then onload (or onerror if missing)
      const file = path.join(dir, s.src);
      if (!fs.existsSync(file)) { setTimeout(s.onerror, 0); return; }
      loaded.push(s.src);
      vm.runInContext(fs.readFileSync(file, "utf8"), context, {filename: s.src});
      setTimeout(s.onload, 0);
    }},
  },
};
context.window = context;
vm.createContext(context);
const started = performance.now();
vm.runInContext(code, context, {filename: "browse.html"});
(async () => {
  for (let i = 0; i < 20000 && !context.document.body.dataset.ready; i++) await new Promise((r) => setTimeout(r, 1));
  const ready = performance.now() - started;
  const first = {status: element("status").textContent || element("status").innerHTML, rows: element("rows").innerHTML};
  const idx = context.SL.rounds[+round] || (await vm.runInContext(`loadRound(${+round})`, context));
  const i = idx.byId.get(recordId);
  if (i === undefined) throw new Error("no record " + recordId);
  const opening = performance.now();
  await vm.runInContext(`openRecord(${+round}, ${i})`, context);
  const opened = performance.now() - opening;
  console.log(JSON.stringify({...first, detail: element("detail").innerHTML, loaded, ready_ms: ready, open_ms: opened}));
})().catch((e) => { console.error(e); process.exit(1); });
