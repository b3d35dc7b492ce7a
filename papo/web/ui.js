// Small DOM helpers shared by the chat page and the dashboard. `el` only ever sets
// text with textContent (strings become text nodes), so nothing becomes HTML.
import { describeError } from "./papo.js";

export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  return node;
}

export function show(node) {
  node.hidden = false;
}

export function hide(node) {
  node.hidden = true;
}

let toastTimer = null;

export function toast(node, text) {
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (node.hidden = true), 6000);
}

// A sign-in form: `signIn(form)` makes the REST calls, then `enter()` opens the page.
// The button is disabled meanwhile; a failure is shown in words and the form is kept.
export function wireSignIn(form, button, errorNode, signIn, enter) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorNode.textContent = "";
    button.disabled = true;
    try {
      await signIn(form);
      form.reset();
      await enter();
    } catch (error) {
      errorNode.textContent = describeError(error);
    } finally {
      button.disabled = false;
    }
  });
}
