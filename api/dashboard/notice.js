// One place that explains the API's refusals to the person: a missing or wrong key (401),
// too many requests (429, with Retry-After), a busy server (503) or no server at all.

import { getKey, onApiError } from "./api.js";

const notice = () => document.getElementById("notice");
let timer = null;

export function showNotice(text, { focusKey = false } = {}) {
  const box = notice();
  clearTimeout(timer);
  box.textContent = text;
  box.hidden = false;
  if (focusKey) document.getElementById("api-key").focus();
}

export function clearNotice() {
  clearTimeout(timer);
  notice().hidden = true;
  notice().textContent = "";
}

function seconds(retryAfter) {
  const value = Number.parseInt(retryAfter, 10);
  return Number.isFinite(value) ? value : null;
}

// Counts down Retry-After so the person knows when trying again will work.
function countdown(prefix, wait) {
  let left = wait;
  const tick = () => {
    showNotice(left > 0 ? `${prefix} Try again in ${left} s.` : `${prefix} You can try again now.`);
    if (left-- > 0) timer = setTimeout(tick, 1000);
  };
  tick();
}

export function installNotices() {
  onApiError((error) => {
    if (error.status === 401) {
      // A late answer to a request made with a key since replaced says nothing of this one.
      if (error.key !== undefined && error.key !== getKey()) return;
      showNotice(getKey()
        ? "The API key was refused: it is unknown or revoked. Enter a valid key above."
        : "This server needs an API key. Enter it in the API key field above (an operator makes one with `spec2fractal keys create`).",
        { focusKey: true });
    } else if (error.status === 429) {
      const wait = seconds(error.retryAfter);
      const why = `Too many requests: ${error.message}.`;
      if (wait === null) showNotice(why);
      else countdown(why, wait);
    } else if (error.status === 503) {
      const wait = seconds(error.retryAfter);
      const why = `The server is busy: ${error.message}.`;
      if (wait === null) showNotice(why);
      else countdown(why, wait);
    } else if (error.status === 0) {
      showNotice(error.message);
    }
  });
}
