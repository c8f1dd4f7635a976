// idle-suspend in JavaScript: the same decisions as policies/idle-suspend (Rust), from the same
// settings, passing the same suite (policies/tests/idle-suspend.yaml).
//
// Suspend a running Sandbox after `idleSeconds` without activity (never while a connection is
// open), and terminate one suspended for longer than `terminateAfterSeconds`.
// Settings: {"idleSeconds": 1800, "terminateAfterSeconds": 604800} (the second is optional).
//
// Built by componentize-js (npm) against wit/, world `lifecycle-policy`: see
// policies/js/build.mjs. WIT u64 and s64 values are BigInts here.

const KNOWN = ["idleSeconds", "terminateAfterSeconds"];

function settingsOf(text) {
  let settings;
  try {
    settings = JSON.parse(text || "{}");
  } catch (error) {
    throw `invalid settings: ${error}`;
  }
  const unknown = Object.keys(settings).filter((key) => !KNOWN.includes(key));
  if (unknown.length > 0) throw `invalid settings: unknown field \`${unknown[0]}\``;
  if (!Number.isInteger(settings.idleSeconds) || settings.idleSeconds < 0) {
    throw "invalid settings: idleSeconds must be a whole number of seconds";
  }
  return settings;
}

export const settings = {
  validateSettings(text) {
    if (settingsOf(text).idleSeconds === 0) throw "idleSeconds must be positive";
  },
};

export const lifecycle = {
  decide(input) {
    const settings = settingsOf(input.settings);
    const activity = input.activity;
    const idleLimit = BigInt(settings.idleSeconds);
    if (input.sandbox.operatingMode === "suspended") {
      if (settings.terminateAfterSeconds === undefined || activity.suspendedSince === undefined) {
        return undefined;
      }
      const limit = BigInt(settings.terminateAfterSeconds);
      let suspendedFor = activity.now - activity.suspendedSince;
      if (suspendedFor < 0n) suspendedFor = 0n;
      if (suspendedFor >= limit) {
        return {
          action: "terminate",
          reason: `suspended for ${suspendedFor}s (limit ${limit}s)`,
        };
      }
      return {
        action: "keep",
        reason: `suspended for ${suspendedFor}s`,
        requeueAfterSeconds: limit - suspendedFor,
      };
    }
    if (activity.openConnections > 0) {
      return {
        action: "keep",
        reason: `${activity.openConnections} open connections`,
        requeueAfterSeconds: idleLimit,
      };
    }
    if (activity.idleSeconds >= idleLimit) {
      return {
        action: "suspend",
        reason: `idle for ${activity.idleSeconds}s (limit ${idleLimit}s)`,
      };
    }
    return {
      action: "keep",
      reason: `idle for ${activity.idleSeconds}s`,
      requeueAfterSeconds: idleLimit - activity.idleSeconds,
    };
  },
};
