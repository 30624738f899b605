// meddenoise view: before / after / residual on plain 2-D canvases, no third-party code.
// The server sends planes as float32 in the image's own units (HU for CT); blending
// (input + s x (denoised - input)), windowing, MONOCHROME1 inversion and the noise overlay are
// done here, so moving a slider never waits for the server.
"use strict";

const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const state = {
  session: null, caseIndex: 0, info: null, slice: 0,
  before: null, after: null, noise: null, shape: null,
  strength: 1, curtain: 0.5, flicker: false, flickerPhase: false, flickerTimer: null,
  window: null, residualFactor: 1, overlay: false,
  zoom: 1, panX: 0, panY: 0, drag: null, drawn: 0, planes: new Map(), metricsTimer: null,
};
const layers = {
  before: document.createElement("canvas"), after: document.createElement("canvas"),
  residual: document.createElement("canvas"), noise: document.createElement("canvas"),
};
const PLANE_CACHE = 48;

function setStatus(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: `Bearer ${token}` }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch (error) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function plane(kind, index) {
  const key = `${state.caseIndex}:${kind}:${index}`;
  if (state.planes.has(key)) return state.planes.get(key);
  const response = await api(`/api/cases/${state.caseIndex}/plane?kind=${kind}&index=${index}`);
  const shape = response.headers.get("X-Plane-Shape").split(",").map(Number);
  const result = { data: new Float32Array(await response.arrayBuffer()), shape };
  state.planes.set(key, result);
  if (state.planes.size > PLANE_CACHE) state.planes.delete(state.planes.keys().next().value);
  return result;
}

// --- intensities to grey levels ---

function windowFunction(win) {
  const info = state.info;
  if (win.lut && info.voi_lut) {  // the file's VOI LUT table (PS3.3 C.11.2.1.1)
    const lut = info.voi_lut, top = (1 << lut.bits) - 1, last = lut.data.length - 1;
    return (value) => {
      let index = Math.round(value) - lut.first;
      index = index < 0 ? 0 : (index > last ? last : index);
      return lut.data[index] / top;
    };
  }
  const centre = Number(win.center), width = Math.max(Number(win.width), 1e-12);
  if (win.function === "SIGMOID") return (value) => 1 / (1 + Math.exp(-4 * (value - centre) / width));
  if (width >= 1) {  // DICOM's LINEAR function (PS3.3 C.11.2.1.2.1)
    return (value) => (value - (centre - 0.5)) / (width - 1) + 0.5;
  }
  return (value) => (value - centre) / width + 0.5;
}

function toGrey(unit) { return unit <= 0 ? 0 : (unit >= 1 ? 255 : Math.round(unit * 255)); }

function paint(canvas, width, height, fill) {
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  fill(image.data);
  context.putImageData(image, 0, 0);
}

function paintImage(canvas, values) {
  const [height, width] = state.shape, colour = state.info.colour;
  const map = windowFunction(state.window), invert = state.info.invert;
  paint(canvas, width, height, (rgba) => {
    for (let pixel = 0; pixel < width * height; pixel++) {
      const out = pixel * 4;
      if (colour) {
        rgba[out] = toGrey(map(values[pixel * 3]));
        rgba[out + 1] = toGrey(map(values[pixel * 3 + 1]));
        rgba[out + 2] = toGrey(map(values[pixel * 3 + 2]));
      } else {
        const unit = map(values[pixel]);
        const grey = toGrey(invert ? 1 - unit : unit);  // MONOCHROME1: low values are white
        rgba[out] = rgba[out + 1] = rgba[out + 2] = grey;
      }
      rgba[out + 3] = 255;
    }
  });
}

function heat(unit) {  // black-red-yellow-white
  const t = Math.max(0, Math.min(1, unit));
  return [toGrey(3 * t), toGrey(3 * t - 1), toGrey(3 * t - 2)];
}

function renderLayers() {
  if (!state.before) return;
  const before = state.before, after = state.after, s = state.strength;
  const blended = new Float32Array(before.length), residual = new Float32Array(before.length);
  for (let index = 0; index < before.length; index++) {
    blended[index] = before[index] + s * (after[index] - before[index]);
    residual[index] = before[index] - blended[index];
  }
  paintImage(layers.before, before);
  paintImage(layers.after, blended);
  const [height, width] = state.shape, channels = state.info.channels;
  const scale = state.info.residual_scale * state.residualFactor;
  $("residual-range").textContent = `${scale.toPrecision(3)} ${state.info.units}`;
  paint(layers.residual, width, height, (rgba) => {
    for (let pixel = 0; pixel < width * height; pixel++) {
      const out = pixel * 4;
      for (let channel = 0; channel < 3; channel++) {
        const value = residual[pixel * channels + (channels === 3 ? channel : 0)];
        rgba[out + channel] = toGrey(0.5 + value / (2 * scale));
      }
      rgba[out + 3] = 255;
    }
  });
  if (state.noise) {
    const top = Math.max(state.info.noise.max, 1e-12);
    paint(layers.noise, width, height, (rgba) => {
      for (let pixel = 0; pixel < width * height; pixel++) {
        const [red, green, blue] = heat(state.noise[pixel] / top);
        rgba.set([red, green, blue, 255], pixel * 4);
      }
    });
  }
  draw();
}

// --- drawing with one shared zoom and pan ---

function drawLayer(context, layer) {
  context.setTransform(state.zoom, 0, 0, state.zoom, state.panX, state.panY);
  context.drawImage(layer, 0, 0);
}

function draw() {
  const main = $("main-view"), side = $("residual-view");
  const context = main.getContext("2d"), residual = side.getContext("2d");
  for (const ctx of [context, residual]) {
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, main.width, main.height);
    ctx.imageSmoothingEnabled = false;
  }
  const split = Math.round(state.curtain * main.width);
  if (state.flicker) {
    drawLayer(context, state.flickerPhase ? layers.after : layers.before);
    $("flicker-label").textContent = state.flickerPhase ? "(showing after)" : "(showing before)";
  } else {
    drawLayer(context, layers.before);
    context.save();
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.beginPath();
    context.rect(split, 0, main.width - split, main.height);
    context.clip();
    drawLayer(context, layers.after);
    context.restore();
    $("flicker-label").textContent = "";
  }
  if (state.overlay && state.noise) {
    context.globalAlpha = 0.45;
    drawLayer(context, layers.noise);
    context.globalAlpha = 1;
  }
  drawLayer(residual, layers.residual);
  const handle = $("curtain-handle");
  handle.style.left = `${split}px`;
  handle.hidden = state.flicker;
  $("zoom-label").textContent = `zoom ${state.zoom.toFixed(2)}×`;
  state.drawn += 1;
  document.body.dataset.drawn = String(state.drawn);
}

function fit() {
  const canvas = $("main-view"), [height, width] = state.shape;
  state.zoom = Math.min(canvas.width / width, canvas.height / height);
  state.panX = (canvas.width - width * state.zoom) / 2;
  state.panY = (canvas.height - height * state.zoom) / 2;
}

// --- loading ---

async function loadSlice(index) {
  state.slice = index;
  const wanted = [plane("before", index), plane("after", index), plane("noise", index)];
  const [before, after, noise] = await Promise.all(wanted);
  if (state.slice !== index) return;  // a newer slice was asked for meanwhile
  state.before = before.data; state.after = after.data; state.noise = noise.data;
  state.shape = before.shape;
  $("slice-label").textContent = `${index + 1} / ${state.info.planes}`;
  renderLayers();
}

function describeNoise(noise) {
  const value = (number) => `${Number(number).toPrecision(3)} ${noise.units}`;
  const level = noise.per_pixel
    ? `per pixel, ${value(noise.min)} to ${value(noise.max)} (median ${value(noise.median)})`
    : (noise.min === noise.max ? `σ = ${value(noise.max)}` : `σ ${value(noise.min)} to ${value(noise.max)} by plane`);
  return `${level}; ${noise.source}`;
}

function setWindows(windows) {
  const select = $("window-preset");
  select.innerHTML = "";
  windows.forEach((win, index) => select.add(new Option(win.name, String(index))));
  select.add(new Option("custom", "custom"));
  chooseWindow(0);
}

function chooseWindow(index) {
  const win = state.info.windows[index];
  state.window = Object.assign({}, win);
  $("window-preset").value = String(index);
  $("window-center").value = Number(win.center).toPrecision(6);
  $("window-width").value = Number(win.width).toPrecision(6);
  $("window-facts").textContent = win.lut ? "the file's VOI LUT table" : (win.function === "SIGMOID" ? "sigmoid VOI function" : "");
}

async function loadCase(index) {
  state.caseIndex = index;
  state.before = null;
  document.body.dataset.ready = "0";
  setStatus("denoising…");
  const info = await (await api(`/api/cases/${index}/prepare`, { method: "POST" })).json();
  state.info = info;
  const facts = [info.modality || info.format.toUpperCase(), info.photometric, `${info.width}×${info.height}`,
    info.colour ? "colour" : "grey", `${info.planes} plane(s)`, `method ${info.method}`].filter(Boolean);
  $("case-facts").textContent = facts.join(" · ");
  $("noise-facts").textContent = describeNoise(info.noise);
  $("slice").max = String(info.planes - 1);
  $("slice").value = "0";
  $("slice-box").hidden = info.planes < 2;
  $("metrics-box").hidden = !info.reference;
  $("write-result").textContent = "";
  setWindows(info.windows);
  state.shape = [info.height, info.width];
  fit();
  await loadSlice(0);
  updateMetrics();
  setStatus(`ready: ${info.name}`);
  document.body.dataset.ready = "1";
}

function updateMetrics() {
  if (!state.info || !state.info.reference) return;
  clearTimeout(state.metricsTimer);
  state.metricsTimer = setTimeout(async () => {
    try {
      const result = await (await api(`/api/cases/${state.caseIndex}/metrics?strength=${state.strength}`)).json();
      const row = (name, score) => `<tr><th>${name}</th><td>${score.psnr === null ? "∞" : score.psnr.toFixed(2)} dB</td><td>${score.ssim.toFixed(4)}</td></tr>`;
      $("metrics").innerHTML = "<tr><th></th><th>PSNR</th><th>SSIM</th></tr>" +
        row("input", result.scores.input) + row(`output (s = ${result.strength})`, result.scores.output);
      $("metrics-mask").textContent = `mask: ${result.mask}`;
    } catch (error) { $("metrics-mask").textContent = `metrics: ${error.message}`; }
  }, 150);
}

// --- controls ---

function canvasPoint(event) {
  const box = event.target.getBoundingClientRect();
  return [(event.clientX - box.left) * event.target.width / box.width,
    (event.clientY - box.top) * event.target.height / box.height];
}

function setCurtain(value) {
  state.curtain = Math.max(0, Math.min(1, value));
  $("curtain").value = String(state.curtain);
  draw();
}

function wireCanvas(canvas, withCurtain) {
  canvas.addEventListener("pointerdown", (event) => {
    const [x, y] = canvasPoint(event);
    const nearCurtain = withCurtain && !state.flicker && Math.abs(x - state.curtain * canvas.width) < 10;
    state.drag = { curtain: nearCurtain, x, y, panX: state.panX, panY: state.panY };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!state.drag) return;
    const [x, y] = canvasPoint(event);
    if (state.drag.curtain) { setCurtain(x / canvas.width); return; }
    state.panX = state.drag.panX + (x - state.drag.x);
    state.panY = state.drag.panY + (y - state.drag.y);
    draw();
  });
  canvas.addEventListener("pointerup", () => { state.drag = null; });
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [x, y] = canvasPoint(event);
    const factor = Math.pow(1.1, -event.deltaY / 100);
    state.panX = x - (x - state.panX) * factor;
    state.panY = y - (y - state.panY) * factor;
    state.zoom *= factor;
    draw();
  }, { passive: false });
}

function changeSlice(step) {
  if (!state.info) return;
  const next = Math.max(0, Math.min(state.info.planes - 1, state.slice + step));
  if (next === state.slice) return;
  $("slice").value = String(next);
  loadSlice(next).catch((error) => setStatus(`error: ${error.message}`));
}

function wireControls() {
  wireCanvas($("main-view"), true);
  wireCanvas($("residual-view"), false);
  $("curtain").addEventListener("input", (event) => setCurtain(Number(event.target.value)));
  $("flicker").addEventListener("change", (event) => setFlicker(event.target.checked));
  $("reset-view").addEventListener("click", () => { fit(); draw(); });
  $("strength").addEventListener("input", (event) => {
    state.strength = Number(event.target.value);
    $("strength-value").textContent = state.strength.toFixed(2);
    renderLayers();
    updateMetrics();
  });
  $("residual-scale").addEventListener("input", (event) => {
    state.residualFactor = Math.pow(10, Number(event.target.value));
    renderLayers();
  });
  $("noise-overlay").addEventListener("change", (event) => { state.overlay = event.target.checked; draw(); });
  $("window-preset").addEventListener("change", (event) => {
    if (event.target.value !== "custom") { chooseWindow(Number(event.target.value)); renderLayers(); }
  });
  for (const id of ["window-center", "window-width"]) {
    $(id).addEventListener("change", () => {
      const width = Number($("window-width").value), centre = Number($("window-center").value);
      if (!(width > 0) || !Number.isFinite(centre)) return;
      state.window = { center: centre, width };
      $("window-preset").value = "custom";
      renderLayers();
    });
  }
  $("slice").addEventListener("input", (event) => {
    loadSlice(Number(event.target.value)).catch((error) => setStatus(`error: ${error.message}`));
  });
  $("case").addEventListener("change", (event) => {
    state.planes.clear();
    loadCase(Number(event.target.value)).catch((error) => setStatus(`error: ${error.message}`));
  });
  $("write").addEventListener("click", writeBlend);
  document.addEventListener("keydown", (event) => {
    if (event.target.tagName === "INPUT" && event.target.type === "number") return;
    if (event.key === "ArrowUp" || event.key === "PageUp") { changeSlice(1); event.preventDefault(); }
    if (event.key === "ArrowDown" || event.key === "PageDown") { changeSlice(-1); event.preventDefault(); }
    if (event.key === "f") { $("flicker").checked = !state.flicker; setFlicker(!state.flicker); }
  });
}

function setFlicker(on) {
  state.flicker = on;
  clearInterval(state.flickerTimer);
  if (on) {
    state.flickerTimer = setInterval(() => { state.flickerPhase = !state.flickerPhase; draw(); }, 500);
  }
  draw();
}

async function writeBlend() {
  const button = $("write");
  button.disabled = true;
  $("write-result").textContent = "writing…";
  try {
    const response = await api(`/api/cases/${state.caseIndex}/write`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ strength: state.strength }),
    });
    const result = await response.json();
    $("write-result").textContent = `written (s = ${result.strength}): ${result.paths.join(", ")}`;
    document.body.dataset.written = JSON.stringify(result.paths);
  } catch (error) {
    $("write-result").textContent = `error: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

async function start() {
  wireControls();
  try {
    state.session = await (await api("/api/session")).json();
    const select = $("case");
    state.session.cases.forEach((item) => select.add(new Option(item.name, String(item.index))));
    await loadCase(0);
  } catch (error) {
    setStatus(`error: ${error.message}`);
    document.body.dataset.error = error.message;
  }
}

start();
