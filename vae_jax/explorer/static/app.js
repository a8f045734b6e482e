// The explorer page: state in one object, mirrored in the URL; every image a View that keeps at
// most one request in flight and sends the latest state when the previous answer arrives.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  z: [], dims: [0, 1], tdim: 0, a: null, b: null, t: 0.5,
  spherical: false, colorize: false, temperature: 1, sampler: "prior", seed: 0,
};
let meta = null;

function showStatus(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const post = (path, body) => api(path, {
  method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
});

class View {
  // One image fed by POST requests; bursts of updates are coalesced (latest state wins).
  constructor(img, request) {
    this.img = img;
    this.request = request;  // () => [path, body], or null when there is nothing to show
    this.busy = false;
    this.dirty = false;
    this.blob = null;
    img.dataset.frames = "0";
  }

  update() {
    if (this.busy) { this.dirty = true; return; }
    const req = this.request();
    if (!req) return;
    this.busy = true;
    this.dirty = false;
    post(...req)
      .then((r) => r.blob())
      .then((blob) => {
        const old = this.img.src;
        this.blob = blob;
        this.img.src = URL.createObjectURL(blob);
        this.img.dataset.frames = String(Number(this.img.dataset.frames) + 1);
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      })
      .catch((error) => showStatus(error.message, true))
      .finally(() => {
        this.busy = false;
        if (this.dirty) this.update();
      });
  }
}

const views = {
  current: new View($("current"), () => ["/api/decode", {codes: [state.z], colorize: state.colorize}]),
  plane: new View($("plane-image"), () => ["/api/strip", {
    kind: "plane", code: state.z, dims: state.dims, side: meta.plane_side, colorize: state.colorize,
  }]),
  traverse: new View($("traverse"), () => ["/api/strip", {
    kind: "traverse", code: state.z, dim: state.tdim, colorize: state.colorize,
  }]),
  interp: new View($("interp"), () => (state.a && state.b ? ["/api/strip", {
    kind: "interp", a: state.a, b: state.b, spherical: state.spherical,
    points: meta.strip_points, colorize: state.colorize,
  }] : null)),
};

// --- the URL holds the view, so it can be reopened and shared -------------------------------

const round = (v) => Math.round(v * 1000) / 1000;
const codeText = (z) => z.map(round).join(",");

function saveState() {
  const p = new URLSearchParams();
  p.set("z", codeText(state.z));
  p.set("d", state.dims.join(","));
  p.set("td", String(state.tdim));
  if (state.a) p.set("a", codeText(state.a));
  if (state.b) p.set("b", codeText(state.b));
  p.set("t", String(state.t));
  p.set("s", state.spherical ? "1" : "0");
  p.set("c", state.colorize ? "1" : "0");
  p.set("temp", String(state.temperature));
  p.set("sampler", state.sampler);
  history.replaceState(null, "", "#" + p.toString());
}

function loadState() {
  const p = new URLSearchParams(location.hash.slice(1));
  const code = (text) => {
    if (!text) return null;
    const z = text.split(",").map(Number);
    return z.length === meta.latent_dim && z.every(Number.isFinite) ? z : null;
  };
  const dim = (text) => {
    const d = Number(text);
    return Number.isInteger(d) && d >= 0 && d < meta.latent_dim ? d : null;
  };
  state.z = code(p.get("z")) || new Array(meta.latent_dim).fill(0);
  const dims = (p.get("d") || "").split(",").map(dim);
  state.dims = dims.length === 2 && dims.every((d) => d !== null) ? dims : meta.plane_dims.slice();
  state.tdim = dim(p.get("td")) ?? meta.plane_dims[0];
  state.a = code(p.get("a"));
  state.b = code(p.get("b"));
  state.t = Math.min(1, Math.max(0, Number(p.get("t") ?? 0.5) || 0));
  state.spherical = p.get("s") === "1";
  state.colorize = p.get("c") === "1" && meta.colorizer;
  state.temperature = Number(p.get("temp") ?? 1) || 1;
  state.sampler = meta.samplers.includes(p.get("sampler")) ? p.get("sampler") : meta.samplers[0];
}

// --- controls ----------------------------------------------------------------------------

function fillSelect(select, values, label) {
  select.replaceChildren(...values.map((v) => new Option(label(v), String(v))));
}

function buildSliders() {
  const box = $("sliders");
  box.replaceChildren();
  meta.kl_per_dim.forEach((kl, d) => {
    const row = document.createElement("div");
    row.className = "slider" + (kl < meta.kl_active ? " inactive" : "");
    const name = document.createElement("span");
    name.textContent = `z${d}  KL ${kl.toFixed(2)}`;
    const input = document.createElement("input");
    Object.assign(input, {type: "range", min: "-5", max: "5", step: "0.01"});
    input.dataset.dim = String(d);
    input.setAttribute("aria-label", `latent dimension ${d}`);
    const value = document.createElement("output");
    input.addEventListener("input", () => {
      state.z[d] = Number(input.value);
      value.textContent = state.z[d].toFixed(2);
      codeChanged({from: "slider"});
    });
    row.append(name, input, value);
    box.append(row);
  });
}

function syncControls() {
  document.querySelectorAll("#sliders input").forEach((input) => {
    const d = Number(input.dataset.dim);
    input.value = String(state.z[d]);
    input.nextElementSibling.textContent = state.z[d].toFixed(2);
  });
  $("plane-row").value = String(state.dims[0]);
  $("plane-col").value = String(state.dims[1]);
  $("traverse-dim").value = String(state.tdim);
  $("spherical").checked = state.spherical;
  $("colorize").checked = state.colorize;
  $("temperature").value = String(state.temperature);
  $("temperature-value").textContent = state.temperature.toFixed(2);
  $("sampler").value = state.sampler;
  $("scrub").disabled = !(state.a && state.b);
  $("scrub").value = String(state.t);
  placeMarker();
}

function placeMarker() {
  const r = meta.plane_radius;
  const frac = (v) => Math.min(1, Math.max(0, (v + r) / (2 * r)));
  // The plane's cells are centred on evenly spaced values: the first at the edge cell's centre.
  const cell = 1 / meta.plane_side;
  const pos = (v) => cell / 2 + frac(v) * (1 - cell);
  const marker = $("plane-marker");
  marker.style.left = `${100 * pos(state.z[state.dims[1]])}%`;
  marker.style.top = `${100 * pos(state.z[state.dims[0]])}%`;
}

let saveTimer = null;

function codeChanged({from = "", strips = true} = {}) {
  views.current.update();
  if (strips) { views.plane.update(); views.traverse.update(); }
  if (from !== "slider") syncControls(); else placeMarker();
  clearTimeout(saveTimer);
  saveTimer = setTimeout(saveState, 150);
}

function interpolate(a, b, t, spherical) {
  // As vae_jax.sampling.interpolate: slerp keeps norms where a Gaussian prior puts its mass.
  const norm = (v) => Math.hypot(...v);
  const na = norm(a), nb = norm(b);
  const cos = a.reduce((s, v, i) => s + v * b[i], 0) / Math.max(na * nb, 1e-12);
  const omega = Math.acos(Math.min(1, Math.max(-1, cos)));
  if (!spherical || Math.sin(omega) < 1e-6) return a.map((v, i) => (1 - t) * v + t * b[i]);
  const s = Math.sin(omega);
  return a.map((v, i) => ((Math.sin((1 - t) * omega) * v / na + Math.sin(t * omega) * b[i] / nb) / s)
    * ((1 - t) * na + t * nb));
}

function setPlaneFromPointer(event) {
  const box = $("plane").getBoundingClientRect();
  const cell = 1 / meta.plane_side;
  const toValue = (p) => {
    const frac = Math.min(1, Math.max(0, (p - cell / 2) / (1 - cell)));
    return round(-meta.plane_radius + 2 * meta.plane_radius * frac);
  };
  state.z[state.dims[1]] = toValue((event.clientX - box.left) / box.width);
  state.z[state.dims[0]] = toValue((event.clientY - box.top) / box.height);
  codeChanged({from: "plane", strips: false});
  views.traverse.update();
}

async function encodeFile(file) {
  if (!file) return;
  showStatus(`Encoding ${file.name}…`);
  try {
    const r = await api(`/api/encode${state.colorize ? "?colorize=1" : ""}`, {method: "POST", body: file});
    const out = await r.json();
    $("upload-input").src = out.input;
    $("upload-recon").src = out.reconstruction;
    $("upload-result").hidden = false;
    state.z = out.code;
    codeChanged();
    showStatus(`Encoded ${file.name}.`);
  } catch (error) {
    showStatus(`Cannot use ${file.name}: ${error.message}`, true);
  }
}

async function loadGallery() {
  const box = $("gallery");
  const page = await (await api("/api/gallery?start=0&count=96")).json();
  box.replaceChildren(...page.items.map((item) => {
    const img = new Image();
    Object.assign(img, {src: item.png, alt: `gallery image ${item.index}`, className: "pixelated"});
    img.addEventListener("click", async () => {
      try {
        state.z = (await (await api(`/api/gallery/${item.index}`)).json()).code;
        codeChanged();
        showStatus(`Gallery image ${item.index}.`);
      } catch (error) { showStatus(error.message, true); }
    });
    return img;
  }));
}

function bind() {
  fillSelect($("sampler"), meta.samplers, (s) => s);
  const dims = meta.kl_per_dim.map((_, d) => d);
  const label = (d) => `z${d}`;
  fillSelect($("plane-row"), dims, label);
  fillSelect($("plane-col"), dims, label);
  fillSelect($("traverse-dim"), dims, label);
  $("colorize-toggle").hidden = !meta.colorizer;

  $("sampler").addEventListener("change", (e) => { state.sampler = e.target.value; saveState(); });
  $("temperature").addEventListener("input", (e) => {
    state.temperature = Number(e.target.value);
    $("temperature-value").textContent = state.temperature.toFixed(2);
  });
  $("random").addEventListener("click", async () => {
    try {
      state.seed = Math.floor(Math.random() * 2 ** 31);
      const r = await post("/api/sample", {
        sampler: state.sampler, temperature: state.temperature, seed: state.seed,
      });
      state.z = (await r.json()).code;
      codeChanged();
      showStatus(`A ${state.sampler} draw at temperature ${state.temperature.toFixed(2)}.`);
    } catch (error) { showStatus(error.message, true); }
  });
  $("upload").addEventListener("change", (e) => encodeFile(e.target.files[0]));
  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dropping"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dropping");
    encodeFile(e.dataTransfer.files[0]);
  });
  $("colorize").addEventListener("change", (e) => {
    state.colorize = e.target.checked;
    codeChanged();
    views.interp.update();
  });
  for (const [id, k] of [["plane-row", 0], ["plane-col", 1]]) {
    $(id).addEventListener("change", (e) => {
      state.dims[k] = Number(e.target.value);
      codeChanged();
    });
  }
  $("traverse-dim").addEventListener("change", (e) => {
    state.tdim = Number(e.target.value);
    views.traverse.update();
    saveState();
  });
  const plane = $("plane");
  let dragging = false;
  plane.addEventListener("pointerdown", (e) => { dragging = true; plane.setPointerCapture(e.pointerId); setPlaneFromPointer(e); });
  plane.addEventListener("pointermove", (e) => { if (dragging) setPlaneFromPointer(e); });
  plane.addEventListener("pointerup", () => { dragging = false; views.plane.update(); });
  $("set-a").addEventListener("click", () => { state.a = state.z.slice(); syncControls(); views.interp.update(); saveState(); });
  $("set-b").addEventListener("click", () => { state.b = state.z.slice(); syncControls(); views.interp.update(); saveState(); });
  $("spherical").addEventListener("change", (e) => { state.spherical = e.target.checked; views.interp.update(); saveState(); });
  $("scrub").addEventListener("input", (e) => {
    state.t = Number(e.target.value);
    state.z = interpolate(state.a, state.b, state.t, state.spherical).map(round);
    codeChanged();
  });
  document.querySelectorAll("[data-download]").forEach((button) => {
    button.addEventListener("click", () => {
      const view = views[button.dataset.download];
      if (!view.blob) { showStatus("Nothing to download yet.", true); return; }
      const link = document.createElement("a");
      link.href = URL.createObjectURL(view.blob);
      link.download = `vae_jax_${button.dataset.download}.png`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 1000);
    });
  });
  $("share").addEventListener("click", async () => {
    saveState();
    try { await navigator.clipboard.writeText(location.href); showStatus("Link copied."); }
    catch (_) { showStatus(location.href); }
  });
}

async function main() {
  try {
    meta = await (await api("/api/meta")).json();
  } catch (error) {
    showStatus(`Cannot reach the explorer: ${error.message}`, true);
    return;
  }
  $("run-name").textContent =
    `— ${meta.workdir}: ${meta.model}, ${meta.latent_dim} latents, step ${meta.step}`;
  $("gallery-source").textContent = `(${meta.gallery_size} from ${meta.source})`;
  loadState();
  buildSliders();
  bind();
  syncControls();
  codeChanged();
  views.interp.update();
  loadGallery().catch((error) => showStatus(error.message, true));
  showStatus("Drag a slider, click the plane, draw a random code or drop a picture.");
  document.body.dataset.ready = "1";
}

main();
