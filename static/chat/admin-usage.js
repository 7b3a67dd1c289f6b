// Admin "Usage": tokens per day stacked by model (bars) and cost per day (line), with the vendored Chart.js.
(() => {
  "use strict";

  const canvas = document.getElementById("usage-chart");
  const source = document.getElementById("usage-chart-data");
  if (!canvas || !source || !window.Chart) return;
  const data = JSON.parse(source.textContent);

  const dark =
    document.documentElement.dataset.theme === "dark" ||
    (document.documentElement.dataset.theme !== "light" && window.matchMedia("(prefers-color-scheme: dark)").matches);
  const text = dark ? "#d0d0d0" : "#333";
  const grid = dark ? "rgba(255,255,255,.12)" : "rgba(0,0,0,.08)";
  const palette = ["#417690", "#10a37f", "#e0a800", "#7c5cff", "#d03a3a", "#2aa1c0", "#8a6d3b", "#5b8c00"];

  const datasets = data.models.map((model, index) => ({
    type: "bar",
    label: `${model || "(unknown)"} tokens`,
    data: data.tokens[model],
    backgroundColor: palette[index % palette.length],
    stack: "tokens",
    yAxisID: "tokens",
    order: 2,
  }));
  datasets.push({
    type: "line",
    label: "Cost ($)",
    data: data.cost,
    borderColor: dark ? "#f5dd5d" : "#c0392b",
    backgroundColor: dark ? "#f5dd5d" : "#c0392b",
    pointRadius: 2,
    tension: 0.25,
    yAxisID: "cost",
    order: 1,
  });

  new window.Chart(canvas, {
    data: { labels: data.labels, datasets },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: "index", intersect: false },
      plugins: {
        legend: { labels: { color: text } },
        tooltip: {
          callbacks: {
            label: (item) =>
              item.dataset.yAxisID === "cost"
                ? `Cost: $${Number(item.raw).toFixed(6)}`
                : `${item.dataset.label}: ${item.raw}`,
          },
        },
      },
      scales: {
        x: { stacked: true, ticks: { color: text, maxRotation: 0, autoSkip: true }, grid: { color: grid } },
        tokens: {
          type: "linear",
          position: "left",
          stacked: true,
          beginAtZero: true,
          title: { display: true, text: "tokens", color: text },
          ticks: { color: text, precision: 0 },
          grid: { color: grid },
        },
        cost: {
          type: "linear",
          position: "right",
          beginAtZero: true,
          title: { display: true, text: "cost ($)", color: text },
          ticks: { color: text },
          grid: { drawOnChartArea: false },
        },
      },
    },
  });
})();
