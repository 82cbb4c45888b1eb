// cxrkit serve page: send one image to /predict and /explain, show the answers.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;
let urls = { image: null, overlay: null };

function setState(state) { document.body.dataset.state = state; }

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
  setState("error");
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || JSON.stringify(body);
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

function row(dl, name, value) {
  if (value === null || value === undefined || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  dl.append(dt, dd);
}

function showCard(card) {
  const dl = $("card");
  dl.replaceChildren();
  const t = card.trained || {};
  row(dl, "Model", card.model_id);
  row(dl, "Architecture", `${card.architecture}, ${card.image_size} px` +
      (card.pretrained ? `, started from ${card.pretrained}` : ""));
  row(dl, "Classes", card.classes.join(", "));
  if (card.threshold !== null) {
    row(dl, "Threshold", `${card.positive_class} when its probability ≥ ${card.threshold}`);
  } else {
    row(dl, "Decision", "the most probable class");
  }
  row(dl, "Trained on", t.images ? `${t.images} images` +
      (t.internal_validation ? " (plus an internal validation split)" : "") : "not recorded");
  row(dl, "Epochs", t.epochs);
  row(dl, "Saved", t.saved_at || "not recorded in the model file");
  row(dl, "Trained with", t.cxrkit_version ? `cxrkit ${t.cxrkit_version}` +
      (t.torch_version ? `, torch ${t.torch_version}` : "") : null);
  row(dl, "Unusual images", card.ood ? `flagged when their out-of-distribution ` +
      `score is above ${card.ood.threshold.toFixed(2)} (set for at most ` +
      `${100 * card.ood.alarm_rate}% of images like the training images)` +
      (card.ood.refused ? "; no call is given for them" : "") :
      "not checked (the model file has no out-of-distribution detector)");
  row(dl, "Served by", `cxrkit ${card.served_by.cxrkit_version}`);
  row(dl, "SHA-256", card.sha256.slice(0, 16) + "…");
  $("method").textContent = card.explanation_caption;
}

function showOod(p, answer) {
  const box = $("ood");
  box.hidden = !p.ood;
  if (!p.ood) return;
  box.textContent = "This image looks unlike the images the model was trained " +
    `on (out-of-distribution score ${p.ood_score.toFixed(2)}, above the ` +
    `threshold ${answer.ood_threshold.toFixed(2)}): ` + (p.refused ?
      "the server gives no call for it." :
      "the model's call and its heatmap below are unreliable. It may not be a " +
      "chest X-ray of the kind the model knows (adult, lateral, other body " +
      "part, photograph).");
}

function showPrediction(answer) {
  const p = answer.predictions[0];
  $("filename").textContent = p.filename;
  showOod(p, answer);
  $("label").textContent = p.refused ? "none (refused)" : p.label;
  $("timing").textContent = `server time ${answer.timing_ms.total.toFixed(0)} ms`;
  $("bars").replaceChildren();
  $("versus").textContent = "";
  if (p.refused) return;
  const pos = answer.classes.map(String).indexOf(String(answer.positive_class));
  $("versus").textContent = answer.threshold === null || pos < 0 ? "" :
    `${answer.positive_class} probability ${p.probabilities[pos].toFixed(3)} is ` +
    `${p.probabilities[pos] >= answer.threshold ? "at or above" : "below"} ` +
    `the threshold ${answer.threshold}`;
  const bars = $("bars");
  answer.classes.forEach((name, i) => {
    const prob = p.probabilities[i];
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset.class = name;
    const title = document.createElement("div");
    title.className = "bar-name";
    const left = document.createElement("span");
    left.textContent = name;
    const right = document.createElement("span");
    right.className = "probability";
    right.textContent = `${(100 * prob).toFixed(1)}%`;
    title.append(left, right);
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill";
    fill.style.width = `${100 * prob}%`;
    track.append(fill);
    bar.append(title, track);
    if (answer.threshold !== null && String(name) === String(answer.positive_class)) {
      const mark = document.createElement("div");
      mark.className = "bar-threshold";
      mark.style.left = `${100 * answer.threshold}%`;
      mark.title = `threshold ${answer.threshold}`;
      track.append(mark);
      const note = document.createElement("div");
      note.className = "threshold-note";
      note.textContent = `red mark: threshold ${answer.threshold} ` +
        `(${name} is called at probability ≥ ${answer.threshold})`;
      bar.append(note);
    }
    bars.append(bar);
  });
}

function showImage() {
  const useOverlay = $("overlay-toggle").checked && urls.overlay;
  $("image").src = useOverlay ? urls.overlay : urls.image;
  $("image").dataset.showing = useOverlay ? "overlay" : "image";
}

async function send(file) {
  $("error").hidden = true;
  setState("busy");
  const form = () => { const f = new FormData(); f.append("file", file, file.name); return f; };
  const predicting = fetch("/predict?preview=true", { method: "POST", body: form() });
  const explaining = fetch("/explain?format=png", { method: "POST", body: form() });
  const response = await predicting;
  if (!response.ok) {
    $("result").hidden = true; // the last image's call is not this file's
    showError(await errorText(response));
    return;
  }
  const answer = await response.json();
  if (urls.overlay) URL.revokeObjectURL(urls.overlay);
  urls = { image: answer.predictions[0].preview, overlay: null };
  showPrediction(answer);
  $("overlay-toggle").disabled = true;
  showImage();
  $("result").hidden = false;
  const refused = Boolean(answer.predictions[0].refused);
  document.querySelector("#result figcaption").hidden = refused;  // no heatmap
  if (refused) { setState("done"); return; }
  const overlay = await explaining;
  if (!overlay.ok) { showError(`heatmap: ${await errorText(overlay)}`); return; }
  urls.overlay = URL.createObjectURL(await overlay.blob());
  $("overlay-toggle").disabled = false;
  showImage();
  setState("done");
}

function chosen(files) {
  if (!files || !files.length) return;
  send(files[0]).catch((err) => showError(`could not reach the server: ${err}`));
}

$("file").addEventListener("change", (e) => chosen(e.target.files));
$("overlay-toggle").addEventListener("change", showImage);
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", (e) => chosen(e.dataTransfer.files));

fetch("/model").then((r) => r.json()).then((card) => { model = card; showCard(card); })
  .catch((err) => showError(`could not load the model card: ${err}`));
