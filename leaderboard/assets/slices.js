/* stbench leaderboard: a page's data slices, loaded when shown (see stbench.leaderboard.slices).
 * A page opened from disk cannot fetch() its files (Chromium blocks file:// requests), but it can add a <script>
 * tag: each slice file, data/<key>.js, is one call stbenchSlice("<key>", data). The slices a page shows first
 * are <script> tags in its HTML; the others are added here on demand. Keys are built by the page from file
 * names the site wrote (slugs), never from names in the data. */
(function () {
  "use strict";

  var loaded = {}, waiting = {};
  function has(obj, key) { return Object.prototype.hasOwnProperty.call(obj, key); }

  window.stbenchSlice = function (key, data) {
    loaded[key] = data;
    var callbacks = waiting[key] || [];
    delete waiting[key];
    callbacks.forEach(function (cb) { cb.ok(data); });
  };

  function one(key, ok, fail) {
    if (has(loaded, key)) { ok(loaded[key]); return; }
    if (waiting[key]) { waiting[key].push({ ok: ok, fail: fail }); return; }
    waiting[key] = [{ ok: ok, fail: fail }];
    var script = document.createElement("script");
    function failed() {
      var callbacks = waiting[key] || [];
      delete waiting[key];
      script.remove();
      callbacks.forEach(function (cb) { cb.fail(key); });
    }
    script.onerror = failed;
    script.onload = function () { if (waiting[key]) failed(); };  // ran, but handed over no data for this key
    script.src = "data/" + key + ".js";
    document.head.appendChild(script);
  }

  // ok(data...) once every key is loaded, in the order asked; fail(key) at the first that cannot be
  window.stbenchLoad = function (keys, ok, fail) {
    var got = new Array(keys.length), left = keys.length, gone = false;
    keys.forEach(function (key, i) {
      one(key, function (data) {
        got[i] = data;
        left -= 1;
        if (left === 0 && !gone) ok.apply(null, got);
      }, function (k) {
        if (!gone) { gone = true; fail(k); }
      });
    });
  };
  window.stbenchLoaded = function (key) { return has(loaded, key); };

  function bytes(text) {
    var raw = atob(text), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return new DataView(out.buffer);
  }
  window.stbenchDecode = {
    // [lo, hi, base64 uint16 codes]: lo + code * (hi - lo) / 65534; code 65535 (or a null array) = no value
    u16: function (packed, n) {
      var out = new Array(n), i;
      if (!packed) { for (i = 0; i < n; i++) out[i] = null; return out; }
      var lo = packed[0], step = (packed[1] - packed[0]) / 65534, view = bytes(packed[2]);
      for (i = 0; i < n; i++) {
        var code = view.getUint16(2 * i, true);
        out[i] = code === 65535 ? null : lo + code * step;
      }
      return out;
    },
    f32: function (text) {
      var view = bytes(text), out = new Array(view.byteLength / 4);
      for (var i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
  };
})();
