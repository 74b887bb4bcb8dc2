// The drive page's uploads: files and folders, picked or dropped, sent in
// parts with progress; a part that fails is sent again from where the
// drive node has it (and a page reloaded mid-upload resumes, by the same
// key). No other script runs on the page but htmx.
(function () {
  "use strict";
  var PART = 4 << 20;
  var TRIES = 8;
  var panel = null;
  var queue = [];
  var running = 0;
  var changed = false;

  function csrf() { return document.body.dataset.csrf || ""; }

  function human(n) {
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + u[i];
  }

  function list() {
    if (!panel) {
      panel = document.createElement("ul");
      panel.className = "uploads";
      panel.id = "upload-panel";
      panel.setAttribute("aria-live", "polite");
    }
    var spot = document.getElementById("uploads");
    if (spot && panel.parentNode !== spot.parentNode) { spot.replaceWith(panel); }
    if (!panel.parentNode) { document.querySelector("main").prepend(panel); }
    return panel;
  }

  function row(name, size) {
    var li = document.createElement("li");
    li.className = "up";
    var label = document.createElement("span");
    label.className = "up-name";
    label.textContent = name;
    var bar = document.createElement("progress");
    bar.max = Math.max(size, 1);
    bar.value = 0;
    var state = document.createElement("span");
    state.className = "up-state";
    state.textContent = "waiting";
    li.append(label, bar, state);
    list().append(li);
    return { li: li, bar: bar, state: state };
  }

  function request(method, url, body, onProgress) {
    return new Promise(function (resolve) {
      var x = new XMLHttpRequest();
      x.open(method, url);
      x.setRequestHeader("X-CSRF-Token", csrf());
      if (body && !(body instanceof Blob)) { x.setRequestHeader("Content-Type", "application/json"); }
      if (onProgress) { x.upload.onprogress = function (e) { onProgress(e.loaded); }; }
      x.onload = function () {
        var json = null;
        try { json = JSON.parse(x.responseText); } catch (e) { json = null; }
        resolve({ status: x.status, json: json, text: x.responseText, url: x.responseURL });
      };
      x.onerror = function () { resolve({ status: 0, json: null, text: "the drive node did not answer" }); };
      x.send(body || null);
    });
  }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function loggedOut(r) { return r.url && r.url.indexOf("/login") >= 0; }

  async function send(item) {
    var f = item.file, ui = item.ui, max = Number(item.max);
    if (max && f.size > max) {
      ui.state.textContent = "too large: this drive node takes files up to " + human(max);
      ui.li.classList.add("bad");
      return;
    }
    var key = [item.dir, item.name, f.size, f.lastModified].join("|");
    var r = await request("POST", "/up", JSON.stringify({ dir: item.dir, name: item.name, size: f.size, key: key }));
    if (r.status !== 200 || !r.json) {
      ui.state.textContent = loggedOut(r) ? "your session ended: log in again" : (r.text || "refused").trim();
      ui.li.classList.add("bad");
      return;
    }
    var id = r.json.id, offset = r.json.offset, tries = 0;
    ui.state.textContent = offset > 0 ? "resuming at " + human(offset) : "sending";
    while (offset < f.size) {
      var end = Math.min(offset + PART, f.size);
      var base = offset;
      r = await request("PUT", "/up/" + id + "?offset=" + offset, f.slice(offset, end), function (n) {
        ui.bar.value = base + n;
      });
      if (r.status === 200 && r.json) {
        offset = r.json.offset;
        ui.bar.value = offset;
        ui.state.textContent = human(offset) + " of " + human(f.size);
        tries = 0;
        continue;
      }
      if (r.status === 413 || r.status === 400 || r.status === 507 || r.status === 404 || loggedOut(r)) {
        ui.state.textContent = loggedOut(r) ? "your session ended: log in again" : (r.text || "refused").trim();
        ui.li.classList.add("bad");
        return;
      }
      if (++tries > TRIES) {
        ui.state.textContent = "stopped after " + TRIES + " tries: " + (r.text || "no answer").trim() + " (drop it again to resume)";
        ui.li.classList.add("bad");
        return;
      }
      ui.state.textContent = "retrying (" + tries + ")";
      await sleep(Math.min(500 * Math.pow(2, tries), 8000));
      var s = await request("GET", "/up/" + id);
      if (s.status === 200 && s.json) { offset = s.json.offset; }
    }
    ui.state.textContent = "storing on the devices";
    for (var t = 0; t <= TRIES; t++) {
      r = await request("POST", "/up/" + id + "/done");
      if (r.status === 200 && r.json && r.json.offset === f.size) {
        ui.bar.value = ui.bar.max;
        ui.state.textContent = "done";
        ui.li.classList.add("ok");
        changed = true;
        return;
      }
      if (loggedOut(r) || (r.status !== 0 && r.status < 500)) { break; }
      await sleep(1000);
    }
    ui.state.textContent = (r.text || "not stored").trim();
    ui.li.classList.add("bad");
  }

  async function pump() {
    while (queue.length > 0 && running < 2) {
      var item = queue.shift();
      running++;
      send(item).finally(function () {
        running--;
        if (running === 0 && queue.length === 0 && changed) {
          changed = false;
          document.body.dataset.uploaded = String(Number(document.body.dataset.uploaded || 0) + 1);
          window.location.reload();
        }
        pump();
      });
    }
  }

  function add(file, name) {
    var drop = document.getElementById("drop");
    if (!drop) { return; }
    var item = { file: file, name: name, dir: drop.dataset.dir, max: drop.dataset.max };
    item.ui = row(name, file.size);
    queue.push(item);
  }

  // A dropped folder's files, with their paths under it.
  function walk(entry, prefix) {
    return new Promise(function (resolve) {
      if (entry.isFile) {
        entry.file(function (f) { add(f, prefix + f.name); resolve(); }, function () { resolve(); });
      } else if (entry.isDirectory) {
        var reader = entry.createReader(), all = [];
        var more = function () {
          reader.readEntries(function (batch) {
            if (batch.length === 0) {
              Promise.all(all.map(function (e) { return walk(e, prefix + entry.name + "/"); })).then(resolve);
            } else { all = all.concat(Array.from(batch)); more(); }
          }, function () { resolve(); });
        };
        more();
      } else { resolve(); }
    });
  }

  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.id !== "pick-files" && t.id !== "pick-folder") { return; }
    Array.from(t.files).forEach(function (f) { add(f, f.webkitRelativePath || f.name); });
    t.value = "";
    pump();
  });

  document.addEventListener("dragover", function (e) {
    var d = document.getElementById("drop");
    if (!d) { return; }
    e.preventDefault();
    d.classList.add("over");
  });
  document.addEventListener("dragleave", function (e) {
    var d = document.getElementById("drop");
    if (d && e.target === d) { d.classList.remove("over"); }
  });
  document.addEventListener("drop", function (e) {
    var d = document.getElementById("drop");
    if (!d) { return; }
    e.preventDefault();
    d.classList.remove("over");
    var items = e.dataTransfer.items ? Array.from(e.dataTransfer.items) : [];
    var entries = items.map(function (i) { return i.webkitGetAsEntry ? i.webkitGetAsEntry() : null; });
    if (entries.length && entries.every(Boolean)) {
      Promise.all(entries.map(function (en) { return walk(en, ""); })).then(pump);
    } else {
      Array.from(e.dataTransfer.files).forEach(function (f) { add(f, f.name); });
      pump();
    }
  });

  document.addEventListener("htmx:afterSwap", function () { if (panel && panel.childElementCount) { list(); } });
})();
