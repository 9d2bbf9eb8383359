// The API key: typed once, kept in this browser's localStorage, sent as a Bearer header.

import { getKey, setKey } from "./api.js";
import { clearNotice } from "./notice.js";

export function installKeyForm(onChange) {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const state = document.getElementById("key-state");
  const show = () => {
    state.textContent = getKey() ? "Key saved in this browser." : "No key saved.";
  };
  input.value = getKey();
  show();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    show();
    clearNotice();
    onChange();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    setKey("");
    input.value = "";
    show();
    onChange();
  });
}
