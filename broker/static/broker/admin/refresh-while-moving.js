// The live migrations list: while a move is waiting or running, look again every 2 s.
window.addEventListener("load", () => {
  if (document.querySelector("[data-moving]")) {
    setTimeout(() => window.location.reload(), 2000);
  }
});
