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
const player = document.getElementById("player");
const playerTitle = document.getElementById("player-title");
const clip = document.getElementById("clip");
const playerFrame = document.getElementById("player-frame");
const playerNote = document.getElementById("player-note");
const lastTracks = new Map();  // the track results shown, by image id
const filtersBox = document.getElementById("filters");
const camerasBox = document.getElementById("cameras");
const afterBox = document.getElementById("after");
const beforeBox = document.getElementById("before");

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

// Seconds as H:MM:SS.s (as `ssan search` prints them).
function clock(seconds) {
  const tenths = Math.round(seconds * 10);
  const minutes = Math.floor(tenths / 600) % 60;
  const rest = tenths % 600;
  return Math.floor(tenths / 36000) + ":" + String(minutes).padStart(2, "0") + ":" +
    String(Math.floor(rest / 10)).padStart(2, "0") + "." + (rest % 10);
}

function timeRange(item) {
  return clock(item.offset_start) + "–" + clock(item.offset_end);
}

// Wall-clock time of a track (start/end are ISO 8601 UTC when time_base is "utc") in this browser's zone,
// with the zone's name ("" when only offsets are known).
function localTime(item) {
  if (item.time_base !== "utc") return "";
  const time = { hour: "numeric", minute: "2-digit", second: "2-digit" };  // dateStyle cannot take a zone name
  const date = { year: "numeric", month: "short", day: "numeric", ...time, timeZoneName: "short" };
  const start = new Date(item.start).toLocaleString(undefined, date);
  const end = new Date(item.end).toLocaleTimeString(undefined, time);
  return start + " – " + end;
}

function showFrameInstead(item, note) {
  clip.pause();
  clip.removeAttribute("src");
  clip.load();
  clip.hidden = true;
  playerFrame.src = item.frame_url;
  playerFrame.alt = "frame of track " + item.track;
  playerFrame.hidden = false;
  playerNote.textContent = note;
}

// Play a track's clip from the time it is first seen (its offset in the file); a folder of frames has no clip: show its frame.
function play(item) {
  playerTitle.textContent = item.camera + " · " + timeRange(item) + " · track " + item.track;
  player.hidden = false;
  player.dataset.imageId = String(item.image_id);
  if (!item.clip_url) {
    showFrameInstead(item, "This footage is a folder of frames: there is no clip, here is the frame of the best crop.");
  } else {
    playerFrame.hidden = true;
    playerNote.textContent = "";
    clip.hidden = false;
    clip.dataset.start = String(item.offset_start);
    clip.src = item.clip_url + "#t=" + item.offset_start.toFixed(3);
    clip.play().catch(() => {});  // refused autoplay or a clip that cannot play: the error handler says so
  }
  player.scrollIntoView({ block: "nearest" });
}

clip.addEventListener("loadedmetadata", () => {
  const start = Number(clip.dataset.start);  // the media fragment already did it where supported
  if (Number.isFinite(start) && Math.abs(clip.currentTime - start) > 0.05) clip.currentTime = start;
});

clip.addEventListener("error", () => {
  if (!clip.getAttribute("src")) return;
  const shown = lastTracks.get(player.dataset.imageId);
  const note = "This browser cannot play this clip (its codec or the file); here is the frame of the best crop.";
  if (shown) showFrameInstead(shown, note);
  else playerNote.textContent = note;
});

function trackFigure(item) {
  const figure = element("figure", "result track");
  figure.tabIndex = 0;
  figure.setAttribute("role", "button");
  figure.setAttribute("aria-label", "play track " + item.track + " of " + item.camera + " from " + clock(item.offset_start));
  figure.dataset.imageId = String(item.image_id);
  figure.dataset.start = String(item.offset_start);
  const pictures = element("div", "pictures");
  const crop = element("img", "crop");
  crop.src = item.url;
  crop.alt = "best crop of track " + item.track;
  const frame = element("img", "frame");
  frame.src = item.frame_url;
  frame.alt = "frame of track " + item.track + " with its box";
  pictures.append(crop, frame);
  figure.appendChild(pictures);
  const caption = element("figcaption");
  caption.appendChild(element("b", "", "#" + item.rank + " · " + item.score.toFixed(3)));
  caption.appendChild(document.createElement("br"));
  caption.appendChild(element("span", "camera", item.camera));
  caption.appendChild(document.createTextNode(" · "));
  caption.appendChild(element("span", "time", timeRange(item)));
  caption.appendChild(document.createTextNode(" · track " + item.track));
  const wall = localTime(item);
  caption.appendChild(document.createElement("br"));
  caption.appendChild(element("span", "wall-time", wall || "offsets in the file (no wall-clock start known)"));
  figure.appendChild(caption);
  figure.addEventListener("click", () => play(item));
  figure.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); play(item); }
  });
  return figure;
}

function renderResults(answer) {
  results.replaceChildren();
  const tracks = answer.results.some((item) => item.track !== undefined);
  results.classList.toggle("tracks", tracks);
  lastTracks.clear();
  for (const item of answer.results) {
    if (item.track !== undefined) {
      lastTracks.set(String(item.image_id), item);
      results.appendChild(trackFigure(item));
      continue;
    }
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
      body: JSON.stringify({ query: query, k: Number.isFinite(k) ? k : 10, ...filterValues() }),
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

// The footage filters as the API takes them: camera names, and the local times as ISO 8601 UTC.
function filterValues() {
  if (filtersBox.hidden) return {};
  const chosen = {};
  const cameras = Array.from(camerasBox.selectedOptions, (option) => option.value);
  if (cameras.length) chosen.cameras = cameras;
  if (afterBox.value) chosen.after = new Date(afterBox.value).toISOString();
  if (beforeBox.value) chosen.before = new Date(beforeBox.value).toISOString();
  return chosen;
}

async function showFilters() {
  const response = await fetch("/api/cameras");
  if (!response.ok) return;
  const listing = await response.json();
  camerasBox.replaceChildren(...listing.cameras.map((name) => new Option(name, name)));
  filtersBox.hidden = false;
}

async function showGallery() {
  try {
    const response = await fetch("/healthz");
    const info = await response.json();
    if (response.ok && typeof info.images === "number") {
      const what = info.tracks ? " tracks of people in footage" : " images";
      document.getElementById("gallery-info").textContent =
        info.images + what + " indexed (" + info.kind + " index, " + info.backend + " encoders)";
      if (info.tracks) await showFilters();
    }
  } catch (error) {
    // the page works without this line
  }
}

forgetTokenInAddress();
form.addEventListener("submit", search);
showGallery();
