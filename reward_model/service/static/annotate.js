// The ranking page: reorder songs by drag and drop or keyboard, then submit the ranking as JSON.
"use strict";
(function () {
  const list = document.getElementById("ranking");
  if (!list) return;
  const status = document.getElementById("status");
  const items = () => Array.from(list.querySelectorAll(".item"));

  function renumber() {
    items().forEach((item, index) => {
      item.querySelector(".place").textContent = String(index + 1);
      item.setAttribute("aria-label", `${item.querySelector(".label").textContent}, place ${index + 1}`);
    });
  }

  function moveTo(item, place) {  // place is 0-based
    const others = items().filter((other) => other !== item);
    const clamped = Math.max(0, Math.min(place, others.length));
    list.insertBefore(item, others[clamped] || null);
    renumber();
    item.focus();
  }

  // Drag and drop (HTML5): the dragged song goes before the song under the pointer's upper half.
  let dragged = null;
  list.addEventListener("dragstart", (event) => {
    dragged = event.target.closest(".item");
    if (!dragged) return;
    dragged.classList.add("dragging");
    event.dataTransfer.effectAllowed = "move";
    event.dataTransfer.setData("text/plain", dragged.dataset.candidateId);
  });
  list.addEventListener("dragover", (event) => {
    if (dragged) event.preventDefault();
  });
  list.addEventListener("drop", (event) => {
    event.preventDefault();
    const target = event.target.closest(".item");
    if (!dragged || !target || target === dragged) return;
    const box = target.getBoundingClientRect();
    const after = event.clientY > box.top + box.height / 2;
    list.insertBefore(dragged, after ? target.nextSibling : target);
    renumber();
  });
  list.addEventListener("dragend", () => {
    if (dragged) dragged.classList.remove("dragging");
    dragged = null;
  });

  // Keyboard: digits move the focused song to that place; arrows move it one place.
  list.addEventListener("keydown", (event) => {
    const item = event.target.closest(".item");
    if (!item || event.target.tagName === "AUDIO" || event.target.tagName === "INPUT") return;
    const index = items().indexOf(item);
    if (/^[1-9]$/.test(event.key)) {
      moveTo(item, Number(event.key) - 1);
    } else if (event.key === "ArrowUp") {
      moveTo(item, index - 1);
    } else if (event.key === "ArrowDown") {
      moveTo(item, index + 1);
    } else {
      return;
    }
    event.preventDefault();
  });

  // Dense ranks: the next place unless "same as above" is ticked.
  function ranking() {
    const ids = [], ranks = [];
    let rank = 0;
    items().forEach((item, index) => {
      const tie = index > 0 && item.querySelector(".tie-box").checked;
      if (!tie) rank += 1;
      ids.push(item.dataset.candidateId);
      ranks.push(rank);
    });
    return { task_id: list.dataset.taskId, candidate_ids: ids, ranks: ranks, tied: new Set(ranks).size < ranks.length };
  }

  document.getElementById("submit").addEventListener("click", async () => {
    status.textContent = "Saving…";
    const response = await fetch("/api/submit", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(ranking()),
    });
    if (response.ok) {
      status.textContent = "Saved.";
      window.location.reload();
    } else {
      const body = await response.json().catch(() => ({}));
      status.textContent = `Not saved: ${typeof body.detail === "string" ? body.detail : response.status}`;
      status.classList.add("error");
    }
  });
  renumber();
})();
