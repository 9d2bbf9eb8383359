// A form field's value as a request wants it: left out (undefined) when empty.

const $ = (id) => document.getElementById(id);

export function number(id) {
  const text = $(id).value.trim();
  return text === "" ? undefined : Number(text);
}

export function text(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : value;
}
