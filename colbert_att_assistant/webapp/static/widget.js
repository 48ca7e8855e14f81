// The one script a shop adds: <script src="https://care.example/widget.js" async></script>
// It draws a launcher button in a shadow root (so the shop's CSS neither reaches it nor is touched by it) and,
// on the first click, a panel holding the chat page (/chat/) in an iframe from this server. The panel closes with
// its ✕, with Escape, or with the launcher; focus returns to the launcher. On a phone the panel fills the screen.
(() => {
  "use strict";
  if (window.__careWidget) return;
  window.__careWidget = true;
  const config = __CONFIG__;
  const script = document.currentScript;
  const origin = script && script.src ? new URL(script.src).origin : location.origin;

  const host = document.createElement("div");
  host.id = "care-widget";
  const root = host.attachShadow({ mode: "open" });
  const style = document.createElement("style");
  const primary = config.style.primary;
  const onPrimary = config.style.on_primary;
  style.textContent = `
    :host { all: initial; }
    .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; display: flex; align-items: center;
      gap: 10px; padding: 0 20px 0 8px; height: 56px; border: 0; border-radius: 28px; cursor: pointer;
      background: ${primary}; color: ${onPrimary}; font: 16px/1 ${config.style.font};
      letter-spacing: .04em; box-shadow: 0 6px 24px rgba(0,0,0,.25); }
    .launcher:focus-visible { outline: 3px solid ${primary}; outline-offset: 3px; }
    .mark { display: inline-grid; place-items: center; width: 40px; height: 40px; border-radius: 50%;
      border: 1px solid currentColor; font-size: 18px; }
    .panel { position: fixed; right: 20px; bottom: 88px; z-index: 2147483001; width: 400px;
      height: min(680px, calc(100vh - 108px)); border-radius: 14px; overflow: hidden; background: #fff;
      box-shadow: 0 12px 48px rgba(0,0,0,.3); }
    .panel[hidden] { display: none; }
    iframe { width: 100%; height: 100%; border: 0; display: block; }
    @media (max-width: 520px) {
      .panel { inset: 0; width: 100%; height: 100%; border-radius: 0; bottom: 0; right: 0; }
      .open .launcher { display: none; }
    }`;
  const wrapper = document.createElement("div");
  const launcher = document.createElement("button");
  launcher.type = "button";
  launcher.className = "launcher";
  launcher.setAttribute("aria-expanded", "false");
  launcher.setAttribute("aria-controls", "care-panel");
  const mark = document.createElement("span");
  mark.className = "mark";
  mark.setAttribute("aria-hidden", "true");
  mark.textContent = config.style.monogram;
  const label = document.createElement("span");
  label.textContent = config.launcher_label;
  launcher.append(mark, label);
  const panel = document.createElement("div");
  panel.className = "panel";
  panel.id = "care-panel";
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-label", config.title);
  wrapper.append(panel, launcher);
  root.append(style, wrapper);
  let frame = null;

  function open() {
    if (!frame) {
      frame = document.createElement("iframe");
      frame.src = `${origin}/chat/?embedded=1`;
      frame.title = config.title;
      frame.setAttribute("allow", "clipboard-write");
      frame.addEventListener("load", () => frame.contentWindow.postMessage({ type: "care:open" }, origin));
      panel.appendChild(frame);
    } else {
      frame.contentWindow.postMessage({ type: "care:open" }, origin);
    }
    panel.hidden = false;
    wrapper.classList.add("open");
    launcher.setAttribute("aria-expanded", "true");
    frame.focus();
  }
  function close() {
    panel.hidden = true;
    wrapper.classList.remove("open");
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }
  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  window.addEventListener("message", (event) => {
    if (frame && event.source === frame.contentWindow && event.origin === origin && event.data
        && event.data.type === "care:close") close();
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !panel.hidden) close(); });

  const attach = () => document.body.appendChild(host);
  if (document.body) attach(); else document.addEventListener("DOMContentLoaded", attach);
})();
