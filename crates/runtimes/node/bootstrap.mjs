// Stratus's Node.js runtime: a Lambda Runtime API client that runs a Node handler.
//
// It behaves like AWS's own Node.js runtime (aws-lambda-nodejs-runtime-interface-client):
// handler strings `dir/file.export.nested`, CommonJS and ES modules (.js/.mjs/.cjs), async
// handlers and callback handlers (with context.callbackWaitsForEmptyEventLoop), the context
// object, console lines `<time>\t<request id>\t<LEVEL>\t<message>`, and the error JSON
// (`errorType`, `errorMessage`, `trace`).

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import util from "node:util";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [HOST, PORT] = (() => {
  const api = process.env.AWS_LAMBDA_RUNTIME_API || "127.0.0.1:9001";
  const i = api.lastIndexOf(":");
  return [api.slice(0, i), Number(api.slice(i + 1))];
})();
const BASE = "/2018-06-01/runtime";
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

let currentRequestId = undefined;

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: HOST, port: PORT, method, path: urlPath, agent, headers: { ...(headers || {}) } },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

// --- console, as AWS patches it ---------------------------------------------------------------

const LEVELS = { trace: "TRACE", debug: "DEBUG", info: "INFO", log: "INFO", warn: "WARN", error: "ERROR", fatal: "FATAL" };
const ORDER = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
const minLevel = ORDER.indexOf((process.env.AWS_LAMBDA_LOG_LEVEL || "TRACE").toUpperCase());

function writeLine(level, args) {
  const msg = util.format(...args).replace(/\n/g, "\r");
  process.stdout.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${msg}\n`);
}

for (const [method, level] of Object.entries(LEVELS)) {
  if (level !== "FATAL" && ORDER.indexOf(level) < minLevel) {
    console[method] = () => {};
  } else {
    console[method] = (...args) => writeLine(level, args);
  }
}

// --- errors -----------------------------------------------------------------------------------

class RuntimeError extends Error {
  constructor(type, message) {
    super(message);
    this.name = `Runtime.${type}`;
  }
}

function toRapid(err) {
  if (err instanceof Error) {
    return {
      errorType: err.name,
      errorMessage: err.message,
      trace: typeof err.stack === "string" ? err.stack.split("\n") : [],
    };
  }
  return { errorType: typeof err, errorMessage: String(err), trace: [] };
}

function toLogged(err) {
  if (err instanceof Error) {
    const out = { errorType: err.name, errorMessage: err.message };
    if (err.code !== undefined) out.code = err.code;
    for (const k of Object.keys(err)) if (!(k in out)) out[k] = err[k];
    out.stack = typeof err.stack === "string" ? err.stack.split("\n") : [];
    return out;
  }
  return { errorType: typeof err, errorMessage: String(err), trace: [] };
}

function postError(urlPath, err) {
  const body = JSON.stringify(toRapid(err));
  return request("POST", urlPath, body, {
    "Content-Type": "application/json",
    "Lambda-Runtime-Function-Error-Type": toRapid(err).errorType,
  });
}

// --- handler loading --------------------------------------------------------------------------

function typeModule(dir, root) {
  let d = dir;
  for (;;) {
    const pj = path.join(d, "package.json");
    if (fs.existsSync(pj)) {
      try {
        return JSON.parse(fs.readFileSync(pj, "utf8")).type === "module";
      } catch {
        return false;
      }
    }
    if (d === root || d === path.dirname(d)) return false;
    d = path.dirname(d);
  }
}

async function loadModule(root, moduleRoot, name) {
  const base = path.resolve(root, moduleRoot, name);
  const require = createRequire(path.join(root, "noop.js"));
  const isFile = (p) => fs.existsSync(p) && fs.statSync(p).isFile();
  if (isFile(base)) return require(base);
  if (isFile(base + ".js")) {
    return typeModule(path.dirname(base), root) ? import(pathToFileURL(base + ".js").href) : require(base + ".js");
  }
  if (isFile(base + ".mjs")) return import(pathToFileURL(base + ".mjs").href);
  if (isFile(base + ".cjs")) return require(base + ".cjs");
  return require(require.resolve(name, { paths: [root, path.resolve(root, moduleRoot)] }));
}

async function loadHandler(root, fullHandler) {
  if (fullHandler.includes("..")) {
    throw new RuntimeError(
      "MalformedHandlerName",
      `'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`,
    );
  }
  const moduleRoot = fullHandler.substring(0, fullHandler.lastIndexOf("/") + 1);
  const handlerString = path.basename(fullHandler);
  const m = /^([^.]*)\.(.*)$/.exec(handlerString);
  if (!m) throw new RuntimeError("MalformedHandlerName", "Bad handler");
  const [, moduleName, propPath] = m;
  let mod;
  try {
    mod = await loadModule(root, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) throw new RuntimeError("UserCodeSyntaxError", String(e));
    if (e && (e.code === "MODULE_NOT_FOUND" || e.code === "ERR_MODULE_NOT_FOUND")) {
      throw new RuntimeError("ImportModuleError", String(e));
    }
    throw e;
  }
  const resolve = (obj) => propPath.split(".").reduce((o, k) => (o ? o[k] : undefined), obj);
  let fn = resolve(mod);
  if (fn === undefined && mod && mod.default) fn = resolve(mod.default);
  if (!fn) throw new RuntimeError("HandlerNotFound", `${fullHandler} is undefined or not exported`);
  if (typeof fn !== "function") throw new RuntimeError("HandlerNotFound", `${fullHandler} is not a function`);
  return fn;
}

// --- the invoke loop --------------------------------------------------------------------------

function makeContext(headers, finish) {
  const deadline = Number(headers["lambda-runtime-deadline-ms"] || 0);
  const parse = (h, what) => {
    if (!h) return undefined;
    try {
      return JSON.parse(h);
    } catch (e) {
      throw new Error(`Cannot parse ${what} as json: ${e.message}`);
    }
  };
  const context = {
    callbackWaitsForEmptyEventLoop: true,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers["lambda-runtime-client-context"], "ClientContext"),
    identity: parse(headers["lambda-runtime-cognito-identity"], "CognitoIdentity"),
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    awsRequestId: headers["lambda-runtime-aws-request-id"],
    tenantId: headers["lambda-runtime-aws-tenant-id"],
    getRemainingTimeInMillis: () => deadline - Date.now(),
    succeed: (res) => finish(null, res, true),
    fail: (err) => finish(err === undefined ? "handled" : err, undefined, true),
    done: (err, res) => finish(err, res, true),
  };
  return context;
}

async function invokeOnce(handler, res) {
  const id = res.headers["lambda-runtime-aws-request-id"];
  currentRequestId = id;
  if (res.headers["lambda-runtime-trace-id"]) process.env._X_AMZN_TRACE_ID = res.headers["lambda-runtime-trace-id"];
  else delete process.env._X_AMZN_TRACE_ID;

  await new Promise((resolveInvoke) => {
    let reported = false;
    let deferred = null;
    const onBeforeExit = () => {
      process.removeListener("beforeExit", onBeforeExit);
      if (deferred) {
        const d = deferred;
        deferred = null;
        send(d.err, d.result);
      } else if (!reported) {
        send(null, null);
      }
    };
    const send = async (err, result) => {
      if (reported) return;
      reported = true;
      process.removeListener("beforeExit", onBeforeExit);
      try {
        if (err !== null && err !== undefined) {
          console.error("Invoke Error", "\t" + JSON.stringify(toLogged(err)));
          await postError(`${BASE}/invocation/${id}/error`, err);
        } else {
          let body;
          try {
            body = JSON.stringify(result === undefined ? null : result);
          } catch (e) {
            const fault = new RuntimeError("MarshalError", `Unable to stringify response body: ${e.message}`);
            await postError(`${BASE}/invocation/${id}/error`, fault);
            resolveInvoke();
            return;
          }
          await request("POST", `${BASE}/invocation/${id}/response`, body, { "Content-Type": "application/json" });
        }
      } catch (e) {
        process.stdout.write(`failed to report the result: ${e}\n`);
        process.exit(1);
      }
      resolveInvoke();
    };
    const finish = (err, result, immediate) => {
      if (reported || deferred) {
        if (!reported) return;
        console.warn("Invocation has already been reported as done. Cannot call complete more than once per invocation.");
        return;
      }
      if (!immediate && context.callbackWaitsForEmptyEventLoop) {
        deferred = { err, result };
        return;
      }
      send(err, result);
    };
    let context;
    let event;
    try {
      context = makeContext(res.headers, finish);
      event = JSON.parse(res.body.toString("utf8"));
    } catch (e) {
      send(e.name === "SyntaxError" ? new RuntimeError("UnmarshalError", `Unable to parse event: ${e.message}`) : e);
      return;
    }
    process.on("beforeExit", onBeforeExit);
    const callback = (err, result) => finish(err === undefined ? null : err, result, false);
    try {
      const ret = handler(event, context, callback);
      if (ret && typeof ret.then === "function") {
        ret.then(
          (r) => finish(null, r, true),
          (e) => finish(e === undefined || e === null ? new Error("Promise rejected without a reason") : e, undefined, true),
        );
      }
    } catch (e) {
      finish(e, undefined, true);
    }
  });
}

async function main() {
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  let handler;
  try {
    handler = await loadHandler(root, process.env._HANDLER || "");
  } catch (e) {
    console.error("Uncaught Exception", "\t" + JSON.stringify(toLogged(e)));
    await postError(`${BASE}/init/error`, e).catch(() => {});
    process.exit(129);
  }
  process.on("uncaughtException", (e) => {
    console.error("Uncaught Exception", "\t" + JSON.stringify(toLogged(e)));
    const id = currentRequestId;
    const done = id ? postError(`${BASE}/invocation/${id}/error`, e) : Promise.resolve();
    done.catch(() => {}).finally(() => process.exit(129));
  });
  process.on("unhandledRejection", (reason) => {
    const e = reason instanceof Error ? reason : new Error(String(reason));
    e.name = "Runtime.UnhandledPromiseRejection";
    console.error("Unhandled Promise Rejection", "\t" + JSON.stringify(toLogged(e)));
    const id = currentRequestId;
    const done = id ? postError(`${BASE}/invocation/${id}/error`, e) : Promise.resolve();
    done.catch(() => {}).finally(() => process.exit(128));
  });
  for (;;) {
    const res = await request("GET", `${BASE}/invocation/next`);
    if (res.status !== 200) {
      process.stdout.write(`the Runtime API refused the next invocation (HTTP ${res.status}); exiting\n`);
      process.exit(1);
    }
    await invokeOnce(handler, res);
  }
}

main();
