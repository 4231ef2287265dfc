// Preloaded into the mock upstream by bench/gateway_load.mjs (`node --import ./instant_timers.mjs
// tests/e2e/mock_openai.mjs --write-delay-ms 0`) so that the mock answers at once.
//
// The mock writes every body in several slices and sleeps `writeDelayMs` between them; with 0 that
// is still setTimeout(fn, 0), which Node clamps to 1 ms, so a streamed answer of ~50 slices takes
// ~50 ms of pure waiting. Here a timer of 0 ms (or less, or none) runs on setImmediate instead: the
// slices still go out as separate writes, in separate event-loop turns, but without the 1 ms
// pauses. Timers with a real delay are untouched.
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
const immediates = new WeakSet();

globalThis.setTimeout = function setTimeout(fn, ms, ...args) {
  if (typeof fn === 'function' && !(Number(ms) > 0)) {
    const im = setImmediate(fn, ...args);
    immediates.add(im);
    return im;
  }
  return realSetTimeout(fn, ms, ...args);
};

globalThis.clearTimeout = function clearTimeout(t) {
  if (t && typeof t === 'object' && immediates.has(t)) return clearImmediate(t);
  return realClearTimeout(t);
};
