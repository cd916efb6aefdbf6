// The serial console's connect call and its admin commands (NMI, SysRq, reset), as the Azure
// CLI's extension does them: POST .../serialPorts/0/connect for a wss:// connection string,
// then POST the same URL with https:// and /adminCommand/<command> instead of /client.

import { ApiError, call, token } from "./api.js";

export async function connect(resourceId) {
  const path = `${resourceId}/providers/Microsoft.SerialConsole/serialPorts/0/connect`;
  return (await call("POST", path)).connectionString;
}

/** Run `command` ("nmi", "reset", "sysrq") on the session of `connectionString`. */
export async function adminCommand(connectionString, command, parameters = {}) {
  const url = new URL(connectionString.replace(/^wss:/, "https:"));
  const path = url.pathname.replace(/\/client$/, `/adminCommand/${command}`);
  const response = await fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${token.get()}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      command, requestId: crypto.randomUUID(), commandParameters: parameters,
    }),
  });
  if (!response.ok) {
    let err = {};
    try {
      err = (await response.json()).error || {};
    } catch {
      // keep the status line
    }
    throw new ApiError(response.status, err.code || `HTTP${response.status}`,
      err.message || response.statusText);
  }
  return response.json();
}

/** An admin command outside a console session (the overview's Reset): connect, then run it. */
export async function adminCommandOn(resourceId, command, parameters = {}) {
  return adminCommand(await connect(resourceId), command, parameters);
}

// The confirmations the cloud's serial console asks before these commands.
export const CONFIRM_NMI =
  "Warning: A Non-Maskable Interrupt (NMI) is used in debugging scenarios and is designed to " +
  "crash your target Virtual Machine. Are you sure you want to send an NMI?";
export const CONFIRM_RESET =
  "Warning: This results in a hard restart, like powering the computer down, then back up " +
  "again. This can result in data loss in the virtual machine. You should only perform this " +
  "operation if a graceful restart is not effective. Are you sure you want to Hard Reset the VM?";
