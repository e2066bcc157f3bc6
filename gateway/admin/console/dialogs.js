// Modal dialogs (native <dialog>): the admin token prompt and the confirmation of an action, plus a toast.

function $(id) {
  return document.getElementById(id);
}

/** Resolve with the value `ok` produces when the OK button (or Enter) is used, null on cancel or Escape. */
function modal(dialog, okButton, cancelButton, ok, focus) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (value) => {
      if (settled) return;
      settled = true;
      okButton.removeEventListener("click", onOk);
      cancelButton.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
      dialog.removeEventListener("keydown", onKey);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onOk = () => {
      const value = ok();
      if (value !== undefined) finish(value);
    };
    const onCancel = (event) => {
      if (event) event.preventDefault();
      finish(null);
    };
    const onKey = (event) => {
      if (event.key === "Enter" && event.target.tagName === "INPUT") {
        event.preventDefault();
        onOk();
      }
    };
    okButton.addEventListener("click", onOk);
    cancelButton.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.addEventListener("keydown", onKey);
    dialog.showModal();
    focus.focus();
  });
}

/** Ask for the admin token; `problem` explains why it is asked again. Resolves with the token or null. */
export function askToken(problem) {
  const input = $("token-input");
  const error = $("token-error");
  input.value = "";
  error.textContent = problem || "";
  error.hidden = !problem;
  return modal($("token-dialog"), $("token-ok"), $("token-cancel"), () => {
    const token = input.value.trim();
    if (!token) {
      error.textContent = "Enter the token, or Cancel.";
      error.hidden = false;
      return undefined;
    }
    return token;
  }, input);
}

/**
 * Confirm an action: {title, text, ok, reason: bool}. Resolves with {reason} when confirmed, null otherwise.
 */
export function confirmAction({ title, text, ok, reason, danger = true }) {
  $("action-title").textContent = title;
  $("action-text").textContent = text;
  const okButton = $("action-ok");
  okButton.textContent = ok;
  okButton.className = danger ? "danger" : "primary";
  const field = $("action-reason");
  field.value = "";
  $("action-reason-label").hidden = !reason;
  return modal($("action-dialog"), okButton, $("action-cancel"), () => ({ reason: field.value.trim() }),
    reason ? field : okButton);
}

let toastTimer = 0;

/** A short message at the bottom of the page (kind: "ok" or "error"). */
export function toast(message, kind = "ok") {
  const el = $("toast");
  el.textContent = message;
  el.className = `toast toast-${kind}`;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 8000 : 4000);
}
