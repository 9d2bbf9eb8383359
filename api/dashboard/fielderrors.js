// A 422's messages shown next to the fields they name (loc ["body", field, ...]); anything
// the form has no field for goes to the form's own error line. A nested loc (["control", 0,
// "type"], or the library's "control[0].type") is looked up as data-field="control.0.type",
// then "control.0", then "control": the most precise box the form has.

const ALIASES = { content: "prompt", image_url: "image", input_type: "prompt" };

export function clearErrors(form, formError) {
  form.querySelectorAll(".error").forEach((element) => {
    element.hidden = true;
    element.textContent = "";
  });
  form.querySelectorAll("[aria-invalid]").forEach((element) => element.removeAttribute("aria-invalid"));
  if (formError) {
    formError.hidden = true;
    formError.textContent = "";
  }
}

function fieldBox(form, name) {
  return name == null ? null : form.querySelector(`[data-field="${CSS.escape(String(name))}"]`);
}

// The names an entry may be shown under, most precise first.
function candidates(entry, raw) {
  if (raw == null) return [raw];
  const loc = Array.isArray(entry.loc) && entry.loc.length && entry.loc[0] === raw ? entry.loc : [raw];
  const parts = loc.flatMap((part) => String(part).split(/[.[\]]+/).filter((piece) => piece !== ""));
  if (!parts.length) return [raw];
  parts[0] = ALIASES[parts[0]] ?? parts[0];
  return parts.map((_, index) => parts.slice(0, parts.length - index).join("."));
}

// Returns the first field element marked invalid, for focus.
export function showErrors(form, error, formError, { fieldOf = (entry) => entry.field } = {}) {
  let first = null;
  const leftover = [];
  for (const entry of error.fieldErrors) {
    const raw = fieldOf(entry);
    const name = candidates(entry, raw).find((candidate) => fieldBox(form, candidate)) ?? raw;
    const box = fieldBox(form, name);
    const message = box?.querySelector(`#${CSS.escape(String(name))}-error`) ?? box?.querySelector(".error");
    if (!box || !message) {
      leftover.push(entry.message);
      continue;
    }
    message.textContent = message.hidden ? entry.message : `${message.textContent} ${entry.message}`;
    message.hidden = false;
    const control = box.querySelector("input:not([type=hidden]), select, textarea");
    if (control) {
      control.setAttribute("aria-invalid", "true");
      first ??= control;
    }
  }
  if (!error.fieldErrors.length) leftover.push(error.message);
  if (leftover.length && formError) {
    formError.textContent = leftover.join(" ");
    formError.hidden = false;
  }
  return first;
}
