// ssan search page: plain JavaScript, no external resources.
"use strict";

const form = document.getElementById("search-form");
const queryBox = document.getElementById("query");
const kBox = document.getElementById("k");
const button = document.getElementById("search-button");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const attentionBox = document.getElementById("attention");
const partsBox = document.getElementById("parts");
const unknownLine = document.getElementById("unknown");

// Opened with ?token=...: the server has set the session cookie; take the token out of the
// address bar (and so out of the history and of anything copied from it).
function forgetTokenInAddress() {
  const address = new URL(window.location.href);
  if (!address.searchParams.has("token")) return;
  address.searchParams.delete("token");
  window.history.replaceState(null, "", address.pathname + address.search + address.hash);
}

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", Boolean(isError));
}

function errorText(payload, status) {
  if (payload && typeof payload.detail === "string") return payload.detail;
  if (payload && Array.isArray(payload.detail) && payload.detail.length) {
    return payload.detail.map((e) => e.msg || String(e)).join("; ");
  }
  return "request failed (HTTP " + status + ")";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderAttention(answer) {
  partsBox.replaceChildren();
  const parts = Object.keys(answer.attention || {});
  const weights = parts.flatMap((name) => answer.attention[name].map((pair) => pair[1]));
  const low = Math.min(...weights);
  const spread = Math.max(...weights) - low || 1;
  parts.forEach((name, index) => {
    const row = element("div", "part");
    row.dataset.part = name;
    row.appendChild(element("span", "part-name", "part " + (index + 1)));
    const strongest = answer.attention[name].map((pair) => pair[1]).sort((a, b) => b - a)[Math.min(2, answer.attention[name].length - 1)];
    for (const [word, weight] of answer.attention[name]) {
      const level = 0.08 + 0.92 * (weight - low) / spread;  // relative to this query's weights
      const chip = element("span", "word", word);
      chip.style.backgroundColor = "rgba(194, 65, 12, " + level.toFixed(3) + ")";
      if (level > 0.6) chip.style.color = "#fff";
      if (weight >= strongest) chip.classList.add("strong");
      chip.title = word + ": " + weight.toFixed(3);
      row.appendChild(chip);
    }
    partsBox.appendChild(row);
  });
  const notes = [];
  if (answer.unknown_words.length) notes.push("Not in the vocabulary (ignored): " + answer.unknown_words.join(", "));
  if (answer.truncated) notes.push("The query was cut to the first " + answer.tokens.length + " words.");
  unknownLine.textContent = notes.join(" ");
  attentionBox.hidden = parts.length === 0 && notes.length === 0;
}

function renderResults(answer) {
  results.replaceChildren();
  for (const item of answer.results) {
    const figure = element("figure", "result");
    const image = element("img");
    image.src = item.url;
    image.alt = item.name;
    figure.appendChild(image);
    const caption = element("figcaption");
    caption.appendChild(element("b", "", "#" + item.rank + " · " + item.score.toFixed(3)));
    caption.appendChild(document.createElement("br"));
    const identity = item.id === null ? "" : "id " + item.id + " · ";
    caption.appendChild(document.createTextNode(identity + item.name));
    figure.appendChild(caption);
    results.appendChild(figure);
  }
}

async function search(event) {
  event.preventDefault();
  const query = queryBox.value.trim();
  const k = Number.parseInt(kBox.value, 10);
  if (!query) { setStatus("Type a description first.", true); return; }
  button.disabled = true;
  setStatus("Searching…", false);
  try {
    const response = await fetch("/api/search", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ query: query, k: Number.isFinite(k) ? k : 10 }),
    });
    if (response.status === 401) {  // the session ended (e.g. the service restarted): back to the token form
      window.location.assign("/");
      return;
    }
    const payload = await response.json().catch(() => null);
    if (!response.ok) { setStatus(errorText(payload, response.status), true); return; }
    renderAttention(payload);
    renderResults(payload);
    setStatus(payload.results.length + " results", false);
  } catch (error) {
    setStatus("The server could not be reached: " + error, true);
  } finally {
    button.disabled = false;
  }
}

async function showGallery() {
  try {
    const response = await fetch("/healthz");
    const info = await response.json();
    if (response.ok && typeof info.images === "number") {
      document.getElementById("gallery-info").textContent =
        info.images + " images indexed (" + info.kind + " index, " + info.backend + " encoders)";
    }
  } catch (error) {
    // the page works without this line
  }
}

forgetTokenInAddress();
form.addEventListener("submit", search);
showGallery();
