// Jobs (broker/admin_jobs.py): while a job on the page is queued or running, ask the admin's
// progress endpoint every second and move its bar, its label and its message; stop asking once
// every job on the page has finished (a reload then shows the result).
(function () {
  "use strict";
  const INTERVAL_MS = 1000;

  function activeJobs() {
    return Array.from(document.querySelectorAll(".vdi-job[data-job-active]"));
  }

  function progressUrl(ids) {
    // The changelist is .../broker/job/ and the change page .../broker/job/ID/change/.
    const base = window.location.pathname.replace(/\/job\/.*$/, "/job/");
    return `${base}progress/?ids=${ids.join(",")}`;
  }

  function show(job) {
    document.querySelectorAll(`.vdi-job[data-job-id="${job.id}"]`).forEach((box) => {
      const bar = box.querySelector("progress");
      if (job.percent === null) bar.removeAttribute("value");
      else bar.value = job.percent;
      box.dataset.jobState = job.state;
      box.querySelector(".vdi-job-label").textContent = job.active
        ? `${job.state_label} · ${job.percent === null ? "…" : `${job.percent} %`}${job.cancel_requested ? " · stopping" : ""}`
        : job.state_label;
      if (!job.active) box.removeAttribute("data-job-active");
    });
    document.querySelectorAll(`[data-job-message="${job.id}"]`).forEach((node) => {
      node.textContent = job.message;
    });
  }

  async function poll() {
    const boxes = activeJobs();
    if (!boxes.length) return;
    const ids = [...new Set(boxes.map((box) => box.dataset.jobId))];
    try {
      const response = await fetch(progressUrl(ids), { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) (await response.json()).jobs.forEach(show);
    } catch (error) {
      // The next round tries again.
    }
    setTimeout(poll, INTERVAL_MS);
  }

  window.addEventListener("load", () => setTimeout(poll, INTERVAL_MS));
})();
