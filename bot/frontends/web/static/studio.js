// The studio's page script: no build step, no framework. Refusals show in the page, in the chat's words.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";

  function detailText(data, status) {
    if (data && typeof data.detail === "string") return data.detail;
    if (data && Array.isArray(data.detail)) {
      return data.detail.map(function (d) {
        var field = d.loc && d.loc.length ? d.loc[d.loc.length - 1] + ": " : "";
        return field + d.msg;
      }).join(" ");
    }
    return "Something went wrong (HTTP " + status + "). Please try again.";
  }

  function api(method, url, body) {
    var options = {method: method, headers: {"Accept": "application/json", "X-CSRF-Token": csrf},
                   credentials: "same-origin"};
    if (body instanceof FormData) {
      options.body = body;  // multipart: the browser sets the boundary
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (data) {
        if (!response.ok) throw new Error(detailText(data, response.status));
        return data;
      });
    });
  }

  function messageBox(near) {
    var box = document.getElementById("message");
    if (!box) {
      box = document.createElement("p");
      box.id = "message";
      box.className = "message";
      box.setAttribute("role", "alert");
      (near || document.querySelector("main")).prepend(box);
    }
    return box;
  }

  function say(text, near) {
    var box = messageBox(near);
    box.textContent = text;
    box.hidden = !text;
  }

  var statusLine = document.getElementById("status");
  var bar = document.getElementById("bar");
  var results = document.getElementById("results");

  function status(text) { if (statusLine) statusLine.textContent = text; }

  function seconds(s) { return s < 1 ? "under a second" : "about " + Math.round(s) + " s"; }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // the toolbox, as the chat's buttons: [action, its value, label]
  var TOOLS = [["upscale", "subtle", "⬆️ Upscale (Subtle)"], ["upscale", "creative", "⬆️ Upscale (Creative)"],
               ["zoom", "1.5", "🔍 Zoom out 1.5x"], ["zoom", "2", "🔍 Zoom out 2x"],
               ["pan", "left", "⬅️ Pan left"], ["pan", "right", "➡️ Pan right"],
               ["pan", "up", "⬆️ Pan up"], ["pan", "down", "⬇️ Pan down"]];
  var TOOL_FIELD = {upscale: "mode", zoom: "factor", pan: "direction"};

  function actionsFor(image) {
    var box = el("div", {"class": "actions", "data-ref": image.id, "data-job": image.job_id});
    var downloads = el("p", {"class": "downloads"}, "Download: ");
    ["png", "jpeg", "webp", "svg"].forEach(function (f) {
      downloads.append(el("a", {href: image.url + "?format=" + f + "&download=1", download: ""}, f.toUpperCase()), " ");
    });
    box.append(downloads);
    var rate = el("fieldset", {"class": "rate"});
    rate.append(el("legend", {}, "Your rating"));
    for (var n = 1; n <= 5; n++) {
      rate.append(el("button", {type: "button", "data-stars": n, "aria-pressed": "false",
                                "aria-label": "Rate " + n + " star" + (n > 1 ? "s" : "")}, "☆"));
    }
    box.append(rate);
    var note = el("form", {"class": "comment", hidden: ""});
    var label = el("label", {}, "Comment (what worked, what did not)");
    label.append(el("textarea", {name: "comment", rows: "2", maxlength: "500"}));
    note.append(label, el("button", {type: "submit"}, "Save comment"));
    box.append(note);
    var buttons = el("p", {"class": "buttons"});
    [["share", "Share to the gallery"], ["variation", "Variations"], ["region", "Vary (Region)"], ["reroll", "Reroll"],
     ["delete", "Delete"]]
      .forEach(function (pair) { buttons.append(el("button", {type: "button", "data-action": pair[0]}, pair[1])); });
    box.append(buttons);
    var tools = el("p", {"class": "buttons tools"});
    TOOLS.forEach(function (t) {
      tools.append(el("button", {type: "button", "data-action": t[0], "data-value": t[1]}, t[2]));
    });
    box.append(tools);
    box.append(el("div", {"class": "shared-links", "aria-live": "polite"}));
    return box;
  }

  function showImages(images) {
    if (!results) return;
    results.textContent = "";
    images.forEach(function (image) {
      var item = el("li", {"class": "result"});
      var link = el("a", {href: image.page});
      link.append(el("img", {src: image.url, alt: "Your new image " + image.id + " (seed " + image.seed + ")",
                             width: image.width, height: image.height}));
      item.append(link);
      item.append(el("p", {"class": "ref"}, image.id + " · seed " + image.seed));
      var actions = actionsFor(image);
      item.append(actions);
      results.append(item);
      bind(actions);
    });
  }

  function refreshQuota() {
    var line = document.getElementById("quota");
    if (!line) return;
    api("GET", "/studio/quota").then(function (q) {
      line.textContent = q.remaining + " of " + q.limit + " images left in this quota window.";
    }, function () {});
  }

  function finish(text) {
    refreshQuota();
    if (bar) bar.hidden = true;
    var shown = document.getElementById("preview");
    if (shown) { shown.hidden = true; shown.removeAttribute("src"); }
    status(text);
    var button = document.getElementById("generate");
    if (button) button.disabled = false;
  }

  function watch(accepted) {
    say("");
    if (bar) { bar.hidden = false; bar.value = 0; bar.max = 1; }
    status("Queued: position " + accepted.position + ", " + seconds(accepted.eta_s) + " to wait.");
    (accepted.notes || []).forEach(function (note) { status(note); });
    var source = new EventSource("/studio/jobs/" + accepted.job_id + "/events");
    var ended = false;
    function end() { ended = true; source.close(); }
    source.addEventListener("queued", function (e) {
      var d = JSON.parse(e.data);
      status("Queued: position " + d.position + ", " + seconds(d.eta_s) + " to wait.");
    });
    source.addEventListener("preview", function (e) {  // the image as it forms (live previews)
      var d = JSON.parse(e.data);
      var shown = document.getElementById("preview");
      if (!shown) return;
      shown.src = "data:" + d.media_type + ";base64," + d.image;
      shown.alt = "Preview at step " + d.step + " of " + d.steps;
      shown.hidden = false;
    });
    source.addEventListener("running", function (e) {
      var d = JSON.parse(e.data);
      if (bar) { bar.max = d.steps; bar.value = d.step; bar.textContent = d.step + " of " + d.steps; }
      status("Making it: step " + d.step + " of " + d.steps + ".");
    });
    source.addEventListener("done", function (e) {
      end();
      var d = JSON.parse(e.data);
      showImages(d.images);
      finish("Done: " + d.images.length + " image" + (d.images.length > 1 ? "s" : "") + ".");
    });
    ["failed", "cancelled"].forEach(function (name) {
      source.addEventListener(name, function (e) {
        end();
        say(JSON.parse(e.data).message);
        finish(name === "failed" ? "It failed; your quota was refunded." : "Cancelled; your quota was refunded.");
      });
    });
    source.addEventListener("status", function (e) {
      end();
      var d = JSON.parse(e.data);
      if (d.status === "done") { showImages(d.images); finish("Done."); }
      else if (d.error) { say(d.error); finish("It ended: " + d.status + "."); }
      else { finish("Status: " + d.status + "."); }
    });
    source.onerror = function () {
      if (ended) return;
      end();
      api("GET", "/studio/jobs/" + accepted.job_id).then(function (d) {
        if (d.status === "done") { showImages(d.images); finish("Done."); }
        else finish("Lost the live progress; the job is " + d.status + ". It will be in My images.");
      }, function (err) { say(err.message); finish(""); });
    };
  }

  function bind(box) {
    var ref = box.dataset.ref;
    box.querySelectorAll("button[data-stars]").forEach(function (button) {
      button.addEventListener("click", function () {
        var stars = Number(button.dataset.stars);
        api("POST", "/studio/images/" + ref + "/rating", {stars: stars}).then(function () {
          box.querySelectorAll("button[data-stars]").forEach(function (b) {
            var n = Number(b.dataset.stars);
            b.textContent = n <= stars ? "★" : "☆";
            b.setAttribute("aria-pressed", n === stars ? "true" : "false");
          });
          box.dataset.rated = String(stars);
          box.querySelector("form.comment").hidden = false;
        }, function (err) { say(err.message, box); });
      });
    });
    var note = box.querySelector("form.comment");
    if (note) note.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = note.querySelector("textarea").value.trim();
      if (!text) { say("Write a comment first, or leave the box empty.", box); return; }
      api("POST", "/studio/images/" + ref + "/rating", {stars: Number(box.dataset.rated), comment: text})
        .then(function () { say("Comment saved beside your rating.", box); },
              function (err) { say(err.message, box); });
    });
    box.querySelectorAll("button[data-action]").forEach(function (button) {
      button.addEventListener("click", function () { act(box, ref, button.dataset.action, button.dataset.value); });
    });
  }

  // 🖌️ Vary (Region): paint over the part to change (or name it), say what goes there instead.
  function openBrush(box, ref) {
    var open = box.querySelector("form.brush");
    if (open) { open.hidden = !open.hidden; return; }
    var item = box.closest("li") || box.closest(".detail") || document;
    var img = item.querySelector("img");
    if (!img) return;
    var form = el("form", {"class": "brush", "aria-label": "Vary (Region)"});
    var canvas = el("canvas", {width: img.naturalWidth || img.width, height: img.naturalHeight || img.height,
                               role: "img", "aria-label": "Paint over the part to change"});
    canvas.style.backgroundImage = "url('" + img.src + "')";
    var painted = false, drawing = false, last = null;
    var ctx = canvas.getContext("2d");
    var size = el("input", {type: "range", min: "4", max: "160", value: "40", id: "brush-size-" + ref});
    function point(e) {
      var r = canvas.getBoundingClientRect();
      return {x: (e.clientX - r.left) * canvas.width / r.width, y: (e.clientY - r.top) * canvas.height / r.height,
              scale: canvas.width / r.width};
    }
    function stroke(from, to) {
      ctx.strokeStyle = "rgba(230, 40, 40, 0.55)";
      ctx.lineCap = "round"; ctx.lineJoin = "round";
      ctx.lineWidth = Number(size.value) * to.scale;
      ctx.beginPath(); ctx.moveTo(from.x, from.y); ctx.lineTo(to.x + 0.01, to.y); ctx.stroke();
      painted = true;
    }
    canvas.addEventListener("pointerdown", function (e) {
      drawing = true; last = point(e); stroke(last, last); canvas.setPointerCapture(e.pointerId);
    });
    canvas.addEventListener("pointermove", function (e) {
      if (!drawing) return;
      var p = point(e); stroke(last, p); last = p;
    });
    ["pointerup", "pointercancel"].forEach(function (name) {
      canvas.addEventListener(name, function () { drawing = false; });
    });
    var sizeLabel = el("label", {"for": size.id}, "Brush size");
    var clear = el("button", {type: "button"}, "Clear");
    clear.addEventListener("click", function () { ctx.clearRect(0, 0, canvas.width, canvas.height); painted = false; });
    var words = el("input", {type: "text", maxlength: "200", id: "brush-words-" + ref, placeholder: "the cat"});
    var wordsLabel = el("label", {"for": words.id}, "Or name the part instead of painting it");
    var text = el("input", {type: "text", maxlength: "1000", id: "brush-text-" + ref, required: "",
                            placeholder: "a small red fox"});
    var textLabel = el("label", {"for": text.id}, "Paint there instead");
    form.append(el("p", {"class": "hint"}, "Paint over the part to change; everything else stays as it is."),
                canvas, sizeLabel, size, clear, wordsLabel, words, textLabel, text,
                el("button", {type: "submit", "class": "primary"}, "Repaint region"));
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = {prompt: text.value};
      if (painted) {
        var mask = document.createElement("canvas");
        mask.width = canvas.width; mask.height = canvas.height;
        var src = ctx.getImageData(0, 0, canvas.width, canvas.height);
        var out = mask.getContext("2d").createImageData(canvas.width, canvas.height);
        for (var i = 0; i < src.data.length; i += 4) {
          var v = src.data[i + 3] > 0 ? 255 : 0;
          out.data[i] = out.data[i + 1] = out.data[i + 2] = v; out.data[i + 3] = 255;
        }
        mask.getContext("2d").putImageData(out, 0, 0);
        body.mask = mask.toDataURL("image/png");
      } else if (words.value.trim()) {
        body.region = words.value.trim();
      } else {
        say("Paint over the part to change, or name it.", box); return;
      }
      api("POST", "/studio/images/" + ref + "/edit", body).then(function (d) {
        form.hidden = true;
        if (document.getElementById("make")) watch(d);
        else window.location.href = "/studio?watch=" + encodeURIComponent(d.job_id);
      }, function (err) { say(err.message, box); });
    });
    box.querySelector(".buttons").after(form);
    text.focus();
  }

  function act(box, ref, action, value) {
    var onStudio = !!document.getElementById("make");
    if (action === "region") { openBrush(box, ref); return; }
    if (TOOL_FIELD[action]) {  // upscale, zoom, pan: a new job, watched like any other
      var body = {};
      body[TOOL_FIELD[action]] = value;
      api("POST", "/studio/images/" + ref + "/" + action, body).then(function (d) {
        if (onStudio) watch(d);
        else window.location.href = "/studio?watch=" + encodeURIComponent(d.job_id);
      }, function (err) { say(err.message, box); });
      return;
    }
    if (action === "share") {
      api("POST", "/studio/images/" + ref + "/share").then(function (d) {
        var links = box.querySelector(".shared-links");
        links.textContent = "";
        var p = el("p", {}, "In the gallery: ");
        p.append(el("a", {href: d.url, "class": "public"}, d.url));
        links.append(p);
        var list = el("ul", {"class": "share-to", "aria-label": "Share to"});
        d.share_to.forEach(function (s) {
          var li = el("li");
          li.append(el("a", {href: s.url, target: "_blank", rel: "noopener noreferrer"}, "Share to " + s.name));
          list.append(li);
        });
        links.append(list);
      }, function (err) { say(err.message, box); });
    } else if (action === "delete") {
      if (!window.confirm("Delete image " + ref + "? This cannot be undone.")) return;
      api("POST", "/studio/images/" + ref + "/delete").then(function () {
        if (onStudio) { box.closest("li").remove(); status("Deleted " + ref + "."); }
        else { window.location.href = "/me"; }
      }, function (err) { say(err.message, box); });
    } else {
      var url = action === "reroll" ? "/studio/jobs/" + box.dataset.job + "/reroll"
                                    : "/studio/images/" + ref + "/variation";
      api("POST", url).then(function (d) {
        if (onStudio) watch(d);
        else window.location.href = "/studio?watch=" + encodeURIComponent(d.job_id);
      }, function (err) { say(err.message, box); });
    }
  }

  var form = document.getElementById("make");
  if (form) {
    var random = document.getElementById("random");
    var seed = document.getElementById("seed");
    random.addEventListener("change", function () {
      seed.disabled = random.checked;
      if (!random.checked) seed.focus();
    });
    var image = document.getElementById("image");
    var strength = document.getElementById("strength");
    var strengthValue = document.getElementById("strength-value");
    var clearImage = document.getElementById("clear-image");
    var aspectChosen = false;
    form.aspect.addEventListener("change", function () { aspectChosen = true; });
    function pictureChosen() {
      var chosen = !!(image.files && image.files.length);
      strength.disabled = !chosen;
      clearImage.hidden = !chosen;
    }
    image.addEventListener("change", function () { aspectChosen = false; pictureChosen(); });
    clearImage.addEventListener("click", function () { image.value = ""; pictureChosen(); image.focus(); });
    strength.addEventListener("input", function () {
      var shown = Number(strength.value).toFixed(2);
      strengthValue.textContent = shown;
      strength.setAttribute("aria-valuetext", shown);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = {prompt: form.prompt.value, aspect: form.aspect.value, steps: Number(form.steps.value),
                  count: Number(form.count.value), style: form.style.value};
      if (form.negative.value.trim()) body.negative = form.negative.value;
      if (form.model && form.model.value) body.model = form.model.value;
      if (!random.checked) {
        if (!/^\d+$/.test(seed.value)) { say("The seed is a whole number from 0 to 4294967295, or tick Random."); seed.focus(); return; }
        body.seed = Number(seed.value);
      }
      var loras = Array.prototype.map.call(form.querySelectorAll('input[name="lora"]:checked'), function (c) { return c.value; });
      if (loras.length) body.lora = loras.join(", ");
      var refine = document.getElementById("refine");
      if (refine) body.refine = refine.checked;
      var picture = image && image.files && image.files[0];
      if (picture) {  // multipart, as POST /v1/images takes a file; the ratio follows the picture unless changed
        if (!aspectChosen) delete body.aspect;
        var data = new FormData();
        Object.keys(body).forEach(function (k) { data.append(k, String(body[k])); });
        data.append("strength", strength.value);
        data.append("image", picture, picture.name);
        body = data;
      }
      var button = document.getElementById("generate");
      button.disabled = true;
      say("");
      status("Sending…");
      api("POST", "/studio/generate", body).then(watch, function (err) {
        say(err.message);
        finish("");
      });
    });
    var watching = new URLSearchParams(window.location.search).get("watch");
    if (watching) watch({job_id: watching, position: 0, eta_s: 0});
  }

  document.querySelectorAll(".detail .actions").forEach(bind);
})();
