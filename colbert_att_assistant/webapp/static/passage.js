// The passage view's way back: to the conversation the reader came from (kept in sessionStorage by panel.js),
// by going back when that is where the reader came from, else by opening the panel.
document.addEventListener("DOMContentLoaded", () => {
  const back = document.getElementById("back");
  if (!back) return;
  back.addEventListener("click", (event) => {
    const cameFromChat = document.referrer && new URL(document.referrer).origin === location.origin
      && new URL(document.referrer).pathname.startsWith("/chat");
    if (cameFromChat && history.length > 1) {
      event.preventDefault();
      history.back();
    }
  });
});
