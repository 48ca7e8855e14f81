// The customer chat panel over the JSON/SSE API (webapp/api.py). No framework: the DOM is built with
// textContent or from escaped text, so nothing a client, a document or the model wrote is ever run.
// The conversation is kept in sessionStorage so that opening a cited passage and coming back loses nothing.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("config").textContent);
  const log = document.getElementById("log");
  const form = document.getElementById("ask");
  const input = document.getElementById("q");
  const send = document.getElementById("send");
  const personButton = document.getElementById("person-btn");
  const person = document.getElementById("person");
  const closeButton = document.getElementById("close-btn");
  const welcome = log.querySelector(".welcome");
  const STORE = "care.conversation";
  // Opened by widget.js (which adds ?embedded=1): the panel can ask the shop page to close it.
  const embedded = window.parent !== window && new URLSearchParams(location.search).has("embedded");

  // Drawn, not emoji: a machine without an emoji font shows emoji as empty boxes.
  const THUMB = '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">'
    + '<path fill="none" stroke="currentColor" stroke-width="1.8" stroke-linejoin="round" '
    + 'd="M7 10v11H3V10h4zm0 0 4-8c1.7 0 2.8 1.3 2.5 3L13 9h6.2c1.3 0 2.2 1.2 1.9 2.4l-1.9 7.7c-.3 1.1-1.2 1.9-2.4 '
    + '1.9H7"/></svg>';

  let state = load();
  let busy = false;

  function load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
      if (saved && Array.isArray(saved.items)) return saved;
    } catch (error) { /* a damaged entry starts a new conversation */ }
    return { session: null, items: [] };
  }
  function save() {
    try { sessionStorage.setItem(STORE, JSON.stringify(state)); } catch (error) { /* storage full or off */ }
  }

  // ---- rendering -------------------------------------------------------------------------------------------

  function escapeHtml(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // Citation markers ([2], [1, 3]) renumbered 1, 2, 3… in the order they first appear in the text.
  function citationOrder(text, known) {
    const order = [];
    for (const match of text.matchAll(/\[(\d+(?:\s*,\s*\d+)*)\]/g)) {
      for (const part of match[1].split(",")) {
        const number = Number(part.trim());
        if (known.has(number) && !order.includes(number)) order.push(number);
      }
    }
    return order;
  }

  function inline(text, display, urls) {
    let out = escapeHtml(text).replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>");
    out = out.replace(/\s?\[(\d+(?:\s*,\s*\d+)*)\]/g, (whole, list) => {
      const links = list.split(",").map((part) => {
        const number = Number(part.trim());
        if (!display.has(number)) return null;
        const shown = display.get(number);
        return `<a href="${escapeHtml(urls.get(number))}" aria-label="Source ${shown}">${shown}</a>`;
      });
      if (links.some((link) => link === null)) return whole;
      return `<sup class="cite">${links.join(",")}</sup>`;
    });
    return out;
  }

  // A small Markdown subset: paragraphs, "- " and "1. " lists, **bold**.
  function answerHtml(text, display, urls) {
    const blocks = [];
    let list = null;
    let paragraph = [];
    const flushParagraph = () => {
      if (paragraph.length) blocks.push(`<p>${paragraph.map((l) => inline(l, display, urls)).join("<br>")}</p>`);
      paragraph = [];
    };
    const flushList = () => {
      if (list) blocks.push(`<${list.tag}>${list.items.map((i) => `<li>${inline(i, display, urls)}</li>`).join("")}</${list.tag}>`);
      list = null;
    };
    for (const line of text.split("\n")) {
      const bullet = line.match(/^\s*[-*•]\s+(.*)$/);
      const numbered = line.match(/^\s*\d+[.)]\s+(.*)$/);
      if (bullet || numbered) {
        flushParagraph();
        const tag = bullet ? "ul" : "ol";
        if (!list || list.tag !== tag) { flushList(); list = { tag, items: [] }; }
        list.items.push((bullet || numbered)[1]);
      } else if (!line.trim()) {
        flushParagraph(); flushList();
      } else {
        flushList(); paragraph.push(line);
      }
    }
    flushParagraph(); flushList();
    return blocks.join("");
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function handoffBox() {
    const box = element("div", "handoff");
    box.appendChild(element("p", "", config.talk_to_person + ":"));
    const list = element("ul", "contacts");
    for (const action of config.contacts) {
      const item = element("li");
      if (action.href) {
        const link = element("a", `contact contact-${action.kind}`, action.label);
        link.href = action.href;
        if (action.kind === "help") { link.target = "_blank"; link.rel = "noopener"; }
        item.appendChild(link);
      } else {
        item.className = `contact contact-${action.kind}`;
        item.textContent = action.label;
      }
      list.appendChild(item);
    }
    box.appendChild(list);
    return box;
  }

  function renderUser(item) {
    const bubble = element("div", "msg user");
    bubble.appendChild(element("span", "visually-hidden", "You: "));
    bubble.appendChild(document.createTextNode(item.text));
    return bubble;
  }

  // `item.sources`: number → {label, url} for every retrieved source; `item.final`: the `done` reply.
  function renderBot(item, bubble) {
    bubble = bubble || element("div", "msg bot");
    bubble.replaceChildren();
    bubble.classList.toggle("pending", !item.final && !item.error);
    // Screen readers announce the answer once it is complete, not every streamed piece.
    bubble.setAttribute("aria-busy", String(!item.final && !item.error));
    bubble.appendChild(element("span", "visually-hidden", config.name + ": "));
    const text = element("div", "text");
    bubble.appendChild(text);
    if (item.error) {
      text.appendChild(element("p", "", item.error));
      if (item === lastBot() && !busy) {
        const retry = element("button", "tool retry", "Retry");
        retry.type = "button";
        retry.addEventListener("click", () => undo(true));
        const bar = element("div", "tools");
        bar.appendChild(retry);
        bubble.appendChild(bar);
      }
      return bubble;
    }
    if (!item.final) {
      if (item.status) text.appendChild(element("p", "status", item.status));
      if (item.text) {
        const known = new Map(Object.entries(item.sources || {}).map(([n, s]) => [Number(n), s]));
        const order = citationOrder(item.text, known);
        const display = new Map(order.map((n, i) => [n, i + 1]));
        const urls = new Map([...known].map(([n, s]) => [n, s.url]));
        text.insertAdjacentHTML("beforeend", answerHtml(item.text, display, urls));
      }
      return bubble;
    }
    const final = item.final;
    const cited = new Map(final.citations.map((c) => [c.number, c]));
    const order = citationOrder(final.answer, cited);
    for (const c of final.citations) if (!order.includes(c.number)) order.push(c.number);
    const display = new Map(order.map((n, i) => [n, i + 1]));
    const urls = new Map(final.citations.map((c) => [c.number, c.url]));
    text.insertAdjacentHTML("beforeend", answerHtml(final.answer, display, urls));
    if (final.grounding_note) bubble.appendChild(element("p", "note", final.grounding_note));
    if (order.length) {
      const sources = element("nav", "sources");
      sources.setAttribute("aria-label", config.sources_heading);
      sources.appendChild(element("h2", "", config.sources_heading));
      const list = element("ol");
      for (const number of order) {
        const citation = cited.get(number);
        const entry = element("li");
        const link = element("a", "source", citation.label);
        link.href = citation.url;
        entry.appendChild(link);
        list.appendChild(entry);
      }
      sources.appendChild(list);
      bubble.appendChild(sources);
    }
    if (final.abstained) bubble.appendChild(handoffBox());
    if (final.turn_id !== null && final.turn_id !== undefined) bubble.appendChild(tools(item));
    return bubble;
  }

  function tools(item) {
    const bar = element("div", "tools");
    const up = element("button", "tool thumb up");
    up.type = "button"; up.setAttribute("aria-label", "Helpful"); up.title = "Helpful";
    up.innerHTML = THUMB;
    const down = element("button", "tool thumb down");
    down.type = "button"; down.setAttribute("aria-label", "Not helpful"); down.title = "Not helpful";
    down.innerHTML = THUMB;
    up.setAttribute("aria-pressed", String(item.feedback === "up"));
    down.setAttribute("aria-pressed", String(item.feedback === "down"));
    up.addEventListener("click", () => feedback(item, true, "", bar));
    down.addEventListener("click", () => feedback(item, false, "", bar));
    bar.append(up, down);
    if (item === lastBot()) {
      const retry = element("button", "tool retry", "Retry");
      retry.type = "button"; retry.setAttribute("aria-label", "Ask this question again");
      retry.addEventListener("click", () => undo(true));
      const edit = element("button", "tool edit", "Edit question");
      edit.type = "button";
      edit.addEventListener("click", () => undo(false));
      bar.append(retry, edit);
    }
    if (item.feedback === "down" && !item.commented) bar.appendChild(commentBox(item, bar));
    if (item.commented) bar.appendChild(element("p", "thanks", config.feedback_thanks));
    return bar;
  }

  function commentBox(item, bar) {
    const box = element("form", "comment");
    const id = `comment-${item.final.turn_id}`;
    const label = element("label", "visually-hidden", config.feedback_question);
    label.htmlFor = id;
    const field = element("input");
    field.id = id; field.type = "text"; field.maxLength = 1000; field.placeholder = config.feedback_question;
    const submit = element("button", "tool", "Send");
    submit.type = "submit";
    box.append(label, field, submit);
    box.addEventListener("submit", (event) => {
      event.preventDefault();
      feedback(item, false, field.value.trim(), bar);
    });
    return box;
  }

  function lastBot() {
    for (let i = state.items.length - 1; i >= 0; i -= 1) if (state.items[i].role === "bot") return state.items[i];
    return null;
  }

  function renderAll() {
    log.querySelectorAll(".msg").forEach((node) => node.remove());
    welcome.hidden = state.items.length > 0;
    for (const item of state.items) log.appendChild(item.role === "user" ? renderUser(item) : renderBot(item));
    log.scrollTop = log.scrollHeight;
  }

  // ---- the API ---------------------------------------------------------------------------------------------

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (error) { /* not JSON */ }
    return { ok: response.ok, status: response.status, data };
  }

  async function feedback(item, helpful, comment, bar) {
    if (!state.session || !item.final) return;
    const reply = await post("/api/feedback", {
      session_id: state.session, turn_id: item.final.turn_id, helpful, comment: comment || null,
    });
    if (!reply.ok) return;
    item.feedback = helpful ? "up" : "down";
    if (comment) item.commented = true;
    save();
    const rendered = tools(item);
    bar.replaceWith(rendered);
    const field = rendered.querySelector(".comment input");
    if (field) field.focus();
  }

  async function undo(askAgain) {
    if (busy) return;
    const bot = lastBot();
    const index = state.items.lastIndexOf(bot);
    const question = index > 0 && state.items[index - 1].role === "user" ? state.items[index - 1].text : "";
    // Only a turn the server remembered is forgotten there: an error or an unreadable message left nothing.
    const remembered = bot && bot.final && bot.final.abstain_reason !== "invalid_message";
    if (state.session && remembered) await post("/api/session/undo", { session_id: state.session });
    state.items.splice(Math.max(0, index - 1));
    save();
    renderAll();
    if (askAgain && question) ask(question);
    else { input.value = question; input.focus(); }
  }

  async function newConversation() {
    if (busy) return;
    if (state.session) await post("/api/session/clear", { session_id: state.session });
    state = { session: null, items: [] };
    save();
    renderAll();
    input.focus();
  }

  function parseEvents(buffer, handle) {
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) handle(name, JSON.parse(data.join("\n")));
    }
    return buffer;
  }

  async function ask(question) {
    if (busy || !question.trim()) return;
    busy = true;
    send.disabled = true;
    const user = { role: "user", text: question };
    const bot = { role: "bot", text: "", sources: {}, final: null, status: "" };
    state.items.push(user, bot);
    save();
    welcome.hidden = true;
    log.appendChild(renderUser(user));
    const bubble = renderBot(bot);
    log.appendChild(bubble);
    log.scrollTop = log.scrollHeight;
    try {
      const response = await fetch("/api/chat/stream", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ message: question, session_id: state.session }),
      });
      if (!response.ok) {
        let detail = "Something went wrong. Please try again.";
        try { detail = (await response.json()).detail || detail; } catch (error) { /* keep the default */ }
        bot.error = typeof detail === "string" ? detail : "Please check your message and try again.";
      } else {
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), (name, data) => {
            if (name === "queued") {
              bot.status = data.position === 1
                ? `You are next; about ${Math.max(1, Math.round(data.estimated_wait_s))} seconds…`
                : `You are number ${data.position} in line; about ${Math.max(1, Math.round(data.estimated_wait_s))} seconds…`;
            } else if (name === "sources") {
              for (const source of data) bot.sources[source.number] = { label: source.label, url: source.url };
              bot.status = "";
            } else if (name === "token") {
              bot.text += data;
            } else if (name === "done") {
              bot.final = data;
              state.session = data.session_id;
            } else if (name === "error") {
              bot.error = data.detail;
            }
            renderBot(bot, bubble);
            log.scrollTop = log.scrollHeight;
          });
        }
        if (!bot.final && !bot.error) bot.error = "The answer was interrupted. Please try again.";
      }
    } catch (error) {
      bot.error = "The assistant cannot be reached at the moment. Please try again in a minute.";
    }
    delete bot.status;
    save();
    busy = false;
    send.disabled = false;
    renderAll();
  }

  // ---- wiring ----------------------------------------------------------------------------------------------

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const question = input.value;
    if (!question.trim()) return;
    input.value = "";
    input.style.height = "";
    ask(question);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    input.style.height = "";
    input.style.height = `${Math.min(input.scrollHeight, 128)}px`;
  });
  log.querySelectorAll(".example").forEach((button) => {
    button.addEventListener("click", () => ask(button.textContent));
  });
  personButton.addEventListener("click", () => {
    const open = person.hidden;
    person.hidden = !open;
    personButton.setAttribute("aria-expanded", String(open));
    if (open) { const first = person.querySelector("a"); if (first) first.focus(); }
  });
  document.getElementById("new-btn").addEventListener("click", newConversation);
  if (embedded) {
    closeButton.hidden = false;
    closeButton.addEventListener("click", () => window.parent.postMessage({ type: "care:close" }, "*"));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") window.parent.postMessage({ type: "care:close" }, "*");
    });
    window.addEventListener("message", (event) => {
      if (event.source === window.parent && event.data && event.data.type === "care:open") input.focus();
    });
  }
  renderAll();
})();
