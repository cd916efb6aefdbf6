// The portal's serial terminal (xterm.js), for the console page and the instructor's watch page.
//
// A reboot must not wipe what came before it: the trainee reads the panic or the failed boot
// that led to it. SeaBIOS's serial console starts each boot with a full reset (ESC c) and a
// clear screen (ESC [2J), which in xterm.js would drop the scrollback and the screen. So the
// reset is not carried out (the bytes stay in the serial log as the guest sent them), and a
// clear screen pushes the screen into the scrollback, as PuTTY does.

export function serialTerminal(options = {}) {
  const term = new window.Terminal({
    convertEol: false, scrollback: 5000, fontSize: 14, scrollOnEraseInDisplay: true,
    fontFamily: "'DejaVu Sans Mono', 'Liberation Mono', monospace",
    ...options,
  });
  term.parser.registerEscHandler({ final: "c" }, () => true);
  // For tests and scripts: the terminal (its buffer holds what the screen shows).
  window.labTerminal = term;
  return term;
}
