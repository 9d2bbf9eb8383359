// The dashboard's entry point: wires the modules together and loads what the page shows.

import { ApiError, api, fetchBlob } from "./api.js";
import { installBatches, loadBatches } from "./batches.js";
import { installCompare, pickForCompare, resetCompare } from "./compare.js";
import { installControls } from "./controls.js";
import {
  batchItemParams, fillParams, installForm, randomSeed, setMaxima, setModels, submitParams,
} from "./form.js";
import { installGallery, loadGallery, setStyleFilter } from "./gallery.js";
import { upscaleJob } from "./jobs.js";
import { installKeyForm } from "./keys.js";
import { trackJob } from "./live.js";
import { applyLoraCapability, installLoraPicker, setLoraFiles } from "./lorapicker.js";
import { installMaskPaint } from "./maskpaint.js";
import { installNotices, showNotice } from "./notice.js";
import { installOutpaint } from "./outpaint.js";
import { installReferences, setModelCapabilities } from "./references.js";
import { installStyleEditor } from "./styleeditor.js";
import { renderStyles, selectStyle } from "./stylepicker.js";
import { installUpload, setImage } from "./upload.js";

const $ = (id) => document.getElementById(id);

// `input`: the input image file, shown beside the result of an inpaint or outpaint.
function onJob(job, params, input = null) {
  trackJob(job, params, { input, onFinished: () => loadGallery({ reset: true }) });
  loadGallery({ reset: true });
}

async function variation(params) {
  try {
    await submitParams({ ...params, seed: randomSeed() }, null, onJob);
    $("live").scrollIntoView({ block: "start" });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showNotice(`The variation could not start: ${error.message}`);
  }
}

function reuse(params) {
  fillParams(params);
  $("create").scrollIntoView({ block: "start" });
  $("prompt").focus();
}

async function useAsInput(output, params) {
  try {
    const blob = await fetchBlob(output.url);
    const type = blob.type || `image/${output.format}`;
    setImage(new File([blob], `input-${output.seed ?? "image"}.${output.format}`, { type }));
    fillParams({ ...params, input_type: "hybrid" }, { keepSeed: false });
    $("create").scrollIntoView({ block: "start" });
    $("strength").focus();
  } catch (error) {
    if (!(error instanceof ApiError) && !(error instanceof TypeError)) throw error;
    showNotice(`That image could not be used as input: ${error.message}`);
  }
}

// Upscale ×2: a new job on the server, followed live as any render is.
async function upscale(job, output, params) {
  try {
    const started = await upscaleJob(job.id, output.index, 2);
    onJob(started, { ...params, input_type: "upscale", prompt: `Upscale ×2: ${params.prompt || "image"}` });
    $("live").scrollIntoView({ block: "start" });
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showNotice(`That image could not be upscaled: ${error.message}`);
  }
}

async function loadStyles() {
  const { data } = await api("/styles");
  renderStyles(data.styles);
  setStyleFilter(data.styles);
}

// After the style editor saved (`name`: pick it) or deleted a style.
async function stylesChanged(name) {
  try {
    await loadStyles();
    if (name) selectStyle(name);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    showNotice(`The styles could not be reloaded: ${error.message}`);
  }
}

// Everything behind the key: loaded at start and again whenever the key changes.
async function loadKeyed() {
  resetCompare();
  const results = await Promise.allSettled([
    loadStyles(),
    api("/models").then(({ data }) => {
      setModels(data);
      setModelCapabilities(data); // which reference and control inputs the model takes
      applyLoraCapability(); // and whether it takes LoRAs
    }),
    api("/loras").then(({ data }) => setLoraFiles(data)),
    loadGallery({ reset: true }),
    loadBatches(),
  ]);
  for (const result of results) {
    if (result.status === "rejected" && !(result.reason instanceof ApiError)) throw result.reason;
  }
}

async function start() {
  installNotices();
  renderStyles([]);
  installUpload();
  installMaskPaint();
  installOutpaint();
  installControls();
  installReferences();
  installLoraPicker();
  installStyleEditor({ changed: stylesChanged });
  installForm({ onJob });
  installGallery({
    onReuse: reuse, onVariation: variation, onUseAsInput: useAsInput,
    onUpscale: upscale, onComparePick: pickForCompare,
  });
  installCompare();
  installBatches({ itemParams: batchItemParams });
  installKeyForm(loadKeyed);
  try {
    const { data } = await api("/ui/options.json");
    setMaxima(data);
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
  await loadKeyed();
  document.body.dataset.ready = "true"; // for tests: every first load has answered
}

start();
