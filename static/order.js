// The order page, live: counts down a QR's life and follows the order's status (no framework).
(function () {
  "use strict";
  var order = document.getElementById("order");
  if (!order) return;
  var number = order.getAttribute("data-order");
  var status = order.getAttribute("data-status");
  var waiting = order.getAttribute("data-waiting") === "true";
  var left = parseInt(order.getAttribute("data-expires-in"), 10) || 0;
  var countdown = document.getElementById("countdown");

  function showLeft() {
    if (!countdown) return;
    var m = Math.floor(left / 60), s = left % 60;
    countdown.textContent = m + ":" + (s < 10 ? "0" : "") + s;
    if (left <= 0) {
      var offer = document.getElementById("expired-offer");
      var qr = document.getElementById("qr");
      if (offer) offer.hidden = false;
      if (qr) qr.classList.add("expired");
    }
  }
  if (countdown) {
    showLeft();
    var timer = setInterval(function () {
      left -= 1;
      showLeft();
      if (left <= 0) clearInterval(timer);
    }, 1000);
  }

  if (!waiting) return;
  function poll() {
    fetch("/api/orders/" + encodeURIComponent(number), { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (o) {
        if (o && o.status !== status) { window.location.reload(); return; }
        setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 2000);
})();
