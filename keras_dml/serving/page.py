"""The search page served at ``/``: one self-contained HTML file (inline CSS
and JavaScript, no request leaves the server, no build step).

Choose an image or drop it on the page; it is POSTed to ``/search?k=K`` as
multipart field "image", and the query and its k nearest gallery items are
shown: thumbnails (``/thumbnail/<id>``), class names (metadata
``class_name``, else the label), scores and, with a threshold, match /
unknown. Element ids used by the browser test: ``file``, ``k``,
``results`` (one ``.result`` per item, each with an ``img``), ``status``,
``verdict``.
"""

import html
import json

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keras_dml search</title>
<style>
 :root { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2430; }
 body { margin: 0; background: #f4f6f9; }
 header { background: #1d2430; color: #fff; padding: 12px 24px; }
 header h1 { font-size: 20px; margin: 0; font-weight: 600; }
 header p { margin: 4px 0 0; font-size: 13px; color: #c4cbd6; }
 main { max-width: 1100px; margin: 0 auto; padding: 20px 24px; }
 #drop { border: 2px dashed #8a96a8; border-radius: 10px; background: #fff; padding: 18px;
         display: flex; gap: 20px; align-items: center; }
 #drop.over { border-color: #2b6de8; background: #eef4ff; }
 #query { width: 140px; height: 140px; object-fit: contain; background: #eceff3;
          border-radius: 6px; }
 .controls label { margin-right: 12px; font-size: 15px; }
 input[type=number] { width: 4em; font-size: 15px; }
 #status { margin-top: 8px; font-size: 14px; color: #4a5566; min-height: 1.2em; }
 #verdict { font-size: 18px; font-weight: 600; margin: 16px 0 4px; }
 #verdict.unknown { color: #b3261e; } #verdict.match { color: #1a7f37; }
 #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
            gap: 14px; margin-top: 12px; }
 .result { background: #fff; border-radius: 8px; padding: 8px; text-align: center;
           box-shadow: 0 1px 3px rgba(0,0,0,.12); border: 3px solid transparent; }
 .result.match { border-color: #1a7f37; } .result.nomatch { border-color: #d0d5dd; }
 .result img { width: 128px; height: 128px; object-fit: contain; background: #eceff3;
               image-rendering: auto; }
 .name { font-weight: 600; margin-top: 4px; overflow-wrap: anywhere; }
 .meta { font-size: 13px; color: #4a5566; }
</style></head>
<body>
<header><h1>Image search</h1>
<p>__SIZE__ gallery images. Choose or drop an image to see its nearest neighbours.__THRESHOLD_TEXT__</p>
</header>
<main>
 <div id="drop">
  <img id="query" alt="query image">
  <div class="controls">
   <label>Image <input id="file" type="file" accept="image/*"></label>
   <label>k <input id="k" type="number" min="1" max="__SIZE__" value="__K__"></label>
   <div id="status">No query yet.</div>
  </div>
 </div>
 <div id="verdict"></div>
 <div id="results"></div>
</main>
<script>
"use strict";
const THRESHOLD = __THRESHOLD__;
const $ = (id) => document.getElementById(id);
let current = null;

function show(text) { $("status").textContent = text; }

async function search(file) {
  current = file;
  $("query").src = URL.createObjectURL(file);
  const k = $("k").value || "__K__";
  const form = new FormData();
  form.append("image", file);
  show("Searching...");
  $("results").textContent = ""; $("verdict").textContent = ""; $("verdict").className = "";
  let body;
  try {
    const response = await fetch("search?k=" + encodeURIComponent(k),
                                 { method: "POST", body: form });
    body = await response.json();
    if (!response.ok) { show("Error " + response.status + ": " + body.error); return; }
  } catch (e) { show("Request failed: " + e); return; }
  render(body);
}

function render(body) {
  const results = body.results;
  show(results.length + " nearest of __SIZE__ (cosine similarity)");
  if (THRESHOLD !== null) {
    const v = $("verdict");
    if (body.unknown) { v.textContent = "Unknown: no gallery image reaches the threshold "
                                          + THRESHOLD.toFixed(3); v.className = "unknown"; }
    else { v.textContent = "Match: " + label(results[0]); v.className = "match"; }
  }
  for (const r of results) {
    const card = document.createElement("div");
    card.className = "result" + (THRESHOLD === null ? "" : (r.match ? " match" : " nomatch"));
    const img = document.createElement("img");
    img.src = "thumbnail/" + r.id; img.alt = label(r); img.loading = "eager";
    const name = document.createElement("div"); name.className = "name";
    name.textContent = label(r);
    const meta = document.createElement("div"); meta.className = "meta";
    meta.textContent = "score " + r.score.toFixed(3) + " · id " + r.id +
      (THRESHOLD === null ? "" : (r.match ? " · match" : " · no match"));
    card.append(img, name, meta);
    $("results").append(card);
  }
}

function label(r) {
  const m = r.metadata || {};
  return m.class_name !== undefined ? String(m.class_name)
       : (r.label >= 0 ? "label " + r.label : "unlabelled");
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) search(e.target.files[0]); });
$("k").addEventListener("change", () => { if (current) search(current); });
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => {
  e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => {
  e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", (e) => {
  const f = e.dataTransfer.files[0]; if (f) search(f); });
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => e.preventDefault());
</script>
</body></html>
"""


def render(size, k, threshold=None):
    """The page for an index of ``size`` items, default ``k``."""
    text = "" if threshold is None else (
        f" Threshold {threshold:.3f}: results below it do not match.")
    return (_PAGE.replace("__SIZE__", str(int(size))).replace("__K__", str(int(k)))
            .replace("__THRESHOLD_TEXT__", html.escape(text))
            .replace("__THRESHOLD__", json.dumps(threshold)))
