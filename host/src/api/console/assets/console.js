// Keeps the progress of running runs fresh. Pages read the same without
// it: this only saves a reload. Loaded from our origin (the CSP allows no
// inline script); it adds no markup of its own.
"use strict";

function watch(line) {
  const run = line.dataset.run;
  const bar = line.querySelector("progress");
  const text = line.querySelector("span");
  const tick = async () => {
    let now;
    try {
      const answer = await fetch(`/runs/${run}/progress`, { credentials: "same-origin" });
      if (!answer.ok) return;
      now = await answer.json();
    } catch {
      return setTimeout(tick, 5000);
    }
    if (now.status !== "running" && now.status !== "queued") {
      // The run ended: the page's other parts (status, refs) changed too.
      window.location.reload();
      return;
    }
    bar.max = Math.max(now.total_objects, 1);
    bar.value = now.objects;
    text.textContent = `${now.objects} of ${now.total_objects} objects, ${size(now.bytes)}`;
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (bytes >= 1024 && unit < units.length - 1) {
    bytes /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${bytes.toFixed(1)} ${units[unit]}`;
}

document.querySelectorAll("[data-run]").forEach(watch);
