// konspekt's upload page (index.html): a file of its own, as the page's Content-Security-Policy runs
// no inline script. It speaks only the API beside it, with the API key the user types.
"use strict";
const FILES = [["report.pdf", "PDF"], ["transcript.srt", "SRT"], ["transcript.vtt", "VTT"], ["transcript.txt", "TXT"]];
const keyInput = document.getElementById("key"), drop = document.getElementById("drop"),
      fileInput = document.getElementById("file"), message = document.getElementById("message"),
      table = document.getElementById("lectures"), rows = table.querySelector("tbody");
const older = document.getElementById("older");
keyInput.value = sessionStorage.getItem("konspekt-key") || "";
keyInput.addEventListener("change", () => {
  sessionStorage.setItem("konspekt-key", keyInput.value.trim()); say(""); refresh(); poll();
});
const key = () => keyInput.value.trim();
const say = (text, isError) => { message.textContent = text; message.className = isError ? "error" : ""; };
let followed = null;  // the last upload: the message follows it until it is published or quarantined
let poller = null;  // the list is refreshed every 5 s while the key is good
let shown = 50;  // lectures in the table, newest first; "Show older lectures" adds 50

function poll() { if (poller === null) poller = setInterval(refresh, 5000); }

function refused() {  // a wrong or revoked key: asking again would only count against this address
  clearInterval(poller); poller = null;
  say("Your API key was refused (401): enter a valid key above.", true);
}

async function api(path, options = {}) {
  const response = await fetch(path, {...options, headers: {...(options.headers || {}), "X-API-Key": key()}});
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    if (response.status === 401) refused();
    throw Object.assign(new Error(`${response.status}: ${detail}`), {status: response.status});
  }
  return response;
}

function upload(file) {  // XMLHttpRequest: fetch cannot report upload progress
  if (!key()) { say("Enter your API key first.", true); return; }
  const request = new XMLHttpRequest(), bar = document.createElement("progress");
  say(`Uploading ${file.name} `); message.appendChild(bar);
  request.upload.onprogress = (e) => { if (e.lengthComputable) { bar.max = e.total; bar.value = e.loaded; } };
  request.onload = () => {
    if (request.status === 201) {
      followed = {id: JSON.parse(request.responseText).id, name: file.name, state: "waiting"};
      say(`${file.name} is uploaded: it waits for its turn.`); refresh();
    }
    else if (request.status === 401) refused();
    else { let detail = request.statusText; try { detail = JSON.parse(request.responseText).detail; } catch (e) {}
           say(`Upload failed (${request.status}): ${detail}`, true); }
  };
  request.onerror = () => say("Upload failed: the connection broke.", true);
  request.open("POST", "lectures");
  request.setRequestHeader("X-API-Key", key());
  request.setRequestHeader("X-Filename", encodeURIComponent(file.name));
  request.setRequestHeader("Content-Type", "application/octet-stream");
  request.send(file);  // the browser streams the file; the server writes it to disk as it comes
}

async function download(id, name, label) {
  try {
    const blob = await (await api(`lectures/${id}/${name}`)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob); link.download = `${label}-${name}`;
    document.body.appendChild(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  } catch (e) { if (e.status !== 401) say(`Download failed: ${e.message}`, true); }
}

function describe(state) {
  if (state.state === "processing") return `processing${state.stage ? ` (${state.stage})` : ""}`;
  if (state.state === "quarantined") return `quarantined: ${state.reason || "see failed/"}`;
  return state.state;
}

function follow(state) {
  if (state.state === followed.state && state.stage === followed.stage) return;
  const name = followed.name;
  Object.assign(followed, {state: state.state, stage: state.stage});
  if (state.state === "published") say(`${name} is ready: download its notes below.`);
  else if (state.state === "quarantined") say(`${name} could not be processed: ${state.reason || "see failed/"}`, true);
  else say(`${name}: ${describe(state)}.`);
  if (state.state === "published" || state.state === "quarantined") followed = null;
}

async function newest(count) {  // the API sends a page of lectures, newest first, and the next page's URL in Link
  let url = "lectures", lectures = [];
  while (url && lectures.length < count) {
    const response = await api(url);
    lectures = lectures.concat(await response.json());
    const next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
    url = next ? next[1] : null;
  }
  return {lectures: lectures.slice(0, count), more: Boolean(url) || lectures.length > count};
}

async function refresh() {
  if (!key()) return;
  try {
    const {lectures, more} = await newest(shown);
    rows.replaceChildren();
    for (const lecture of lectures) {
      const row = rows.insertRow(), state = lecture.status || {state: "waiting"};
      if (followed && followed.id === lecture.id) follow(state);
      row.dataset.id = lecture.id;
      row.insertCell().textContent = lecture.name;
      const cell = row.insertCell();
      cell.textContent = describe(state); cell.className = `state-${state.state}`;
      const notes = row.insertCell();
      if (state.state === "published") {
        for (const [name, label] of FILES) {
          const button = document.createElement("button");
          button.className = "link"; button.textContent = label; button.dataset.file = name;
          button.onclick = () => download(lecture.id, name, lecture.name.replace(/\.[^.]*$/, ""));
          notes.appendChild(button);
        }
      }
    }
    table.hidden = lectures.length === 0;
    older.hidden = !more;
  } catch (e) { if (e.status !== 401) say(`Could not list your lectures: ${e.message}`, true); }
}

older.addEventListener("click", () => { shown += 50; refresh(); });
drop.addEventListener("click", () => fileInput.click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") fileInput.click(); });
fileInput.addEventListener("change", () => { for (const file of fileInput.files) upload(file); fileInput.value = ""; });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over");
                                       for (const file of e.dataTransfer.files) upload(file); });
refresh();
poll();
