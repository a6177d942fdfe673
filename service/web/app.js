// The service's web page: upload, immunize (at once, or as a queued job), compare, download.
// Plain browser APIs only: nothing is loaded from anywhere but this service.
"use strict";

const $ = (id) => document.getElementById(id);
let offer = null;
let chosen = null;

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function errorOf(response) {
  try { return (await response.json()).error || response.statusText; }
  catch (e) { return response.statusText; }
}

async function loadOffer() {
  const response = await fetch("/v1/models");
  offer = await response.json();
  for (const model of offer.models) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" name="model" checked> `;
    label.firstChild.value = model;
    label.append(model);
    $("models").append(label);
  }
  const levels = [2, 4, 8, 12, 16, 24, 32].map((n) => `${n}/255`);
  const max = fraction(offer.max_eps);
  for (const eps of levels.filter((e) => fraction(e) <= max + 1e-12)) {
    const option = new Option(eps, eps, false, eps === offer.default_eps);
    $("eps").append(option);
  }
}

function fraction(text) {
  const [a, b] = String(text).split("/");
  return b === undefined ? Number(a) : Number(a) / Number(b);
}

function choose(file) {
  chosen = file;
  $("go").disabled = !file;
  say(file ? `${file.name}: ${file.size} bytes` : "");
}

function form() {
  const data = new FormData();
  data.append("image", chosen);
  const models = [...document.querySelectorAll("input[name=model]:checked")].map((m) => m.value);
  data.append("models", models.join(","));
  data.append("eps", $("eps").value);
  data.append("format", $("format").value);
  return data;
}

async function post(path) {
  return fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${$("key").value.trim()}` },
    body: form(),
  });
}

async function pixelsOf(blob) {
  const bitmap = await createImageBitmap(blob);
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0);
  return context.getImageData(0, 0, bitmap.width, bitmap.height);
}

function paint(id, image) {
  const canvas = $(id);
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
}

async function show(blob) {
  const before = await pixelsOf(chosen);
  const after = await pixelsOf(blob);
  const delta = new ImageData(after.width, after.height);
  for (let i = 0; i < after.data.length; i += 4) {
    for (let c = 0; c < 3; c++) {
      delta.data[i + c] = 128 + 10 * (after.data[i + c] - before.data[i + c]);
    }
    delta.data[i + 3] = 255;
  }
  paint("original", before);
  paint("immunized", after);
  paint("delta", delta);
  const link = $("download");
  link.href = URL.createObjectURL(blob);
  link.download = `immunized.${$("format").value}`;
  $("result").hidden = false;
}

async function poll(job) {
  const headers = { Authorization: `Bearer ${$("key").value.trim()}` };
  const bar = $("progress");
  bar.hidden = false;
  for (;;) {
    const response = await fetch(job.url, { headers });
    if (!response.ok) throw new Error(await errorOf(response));
    const state = await response.json();
    if (state.state === "done") break;
    if (state.state === "failed") throw new Error(state.error);
    bar.value = state.state === "running" ? 60 : 20;
    say(state.state === "queued" ? `queued (${state.queued_ahead} ahead)` : "immunizing…");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  bar.value = 100;
  return fetch(job.result_url, { headers });
}

async function immunize(event) {
  event.preventDefault();
  $("go").disabled = true;
  $("result").hidden = true;
  try {
    const size = await createImageBitmap(chosen);
    const queued = size.width * size.height > offer.max_sync_pixels;
    say(queued ? "uploading for a queued job…" : "immunizing…");
    let response = await post(queued ? "/v1/jobs" : "/v1/immunize");
    if (!response.ok) throw new Error(await errorOf(response));
    if (queued) response = await poll(await response.json());
    if (!response.ok) throw new Error(await errorOf(response));
    await show(await response.blob());
    say("done: the file is immunized and signed");
  } catch (error) {
    say(String(error.message || error), true);
  } finally {
    $("go").disabled = !chosen;
  }
}

function setUp() {
  const drop = $("drop");
  $("key").value = localStorage.getItem("photoimmune-key") || "";
  $("key").addEventListener("change", () => localStorage.setItem("photoimmune-key", $("key").value));
  $("file").addEventListener("change", () => choose($("file").files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
  $("form").addEventListener("submit", immunize);
  loadOffer().catch((error) => say(`cannot reach the service: ${error}`, true));
}

setUp();
