// Sends the photos with a progress bar. Without this script the form posts as usual.
(function () {
  "use strict";
  var form = document.getElementById("send-form");
  if (!form || !window.FormData || !window.XMLHttpRequest) { return; }
  var bar = document.getElementById("progress-bar");
  var text = document.getElementById("progress-text");
  var box = document.getElementById("progress");
  var button = document.getElementById("send");
  form.addEventListener("submit", function (event) {
    if (!form.checkValidity()) { return; }
    event.preventDefault();
    var request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      var percent = Math.round((e.loaded / e.total) * 100);
      bar.value = percent;
      text.textContent = percent < 100 ? "Sending... " + percent + "%" : "Checking and storing the photos...";
    });
    request.addEventListener("load", function () {
      // The server's page (results, or the form with what to fix) replaces this one.
      document.open();
      document.write(request.responseText);
      document.close();
    });
    request.addEventListener("error", function () {
      box.hidden = true;
      button.disabled = false;
      text.textContent = "";
      window.alert("The photos could not be sent. Check your connection and try again.");
    });
    box.hidden = false;
    button.disabled = true;
    request.send(new FormData(form));
  });
}());
