// Stratus's Node.js runtime: a Lambda Runtime API client that runs a Node handler.
//
// It behaves like AWS's own Node.js runtime (aws-lambda-nodejs-runtime-interface-client):
// handler strings `dir/file.export.nested`, CommonJS and ES modules (.js/.mjs/.cjs), async
// handlers and callback handlers (with context.callbackWaitsForEmptyEventLoop), the context
// object, console lines `<time>\t<request id>\t<LEVEL>\t<message>`, and the error JSON
// (`errorType`, `errorMessage`, `trace`).
//
// Start-up cost matters (it is part of every cold start): this file is CommonJS (faster to
// load than an ES module) and speaks HTTP/1.1 over `net` itself instead of loading `http`.
"use strict";

const net = require("node:net");
const fs = require("node:fs");
const path = require("node:path");
const util = require("node:util");
const { createRequire } = require("node:module");
const { pathToFileURL } = require("node:url");

const [HOST, PORT] = (() => {
  const api = process.env.AWS_LAMBDA_RUNTIME_API || "127.0.0.1:9001";
  const i = api.lastIndexOf(":");
  return [api.slice(0, i), Number(api.slice(i + 1))];
})();
const BASE = "/2018-06-01/runtime";

let currentRequestId = undefined;

// One kept-alive connection; requests are strictly sequential.
let socket = null;
let buffered = Buffer.alloc(0);
let waiting = null;

function connect() {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ host: HOST, port: PORT }, () => resolve(s));
    s.setNoDelay(true);
    s.on("error", (e) => {
      if (waiting) {
        const w = waiting;
        waiting = null;
        w.reject(e);
      } else {
        reject(e);
      }
    });
    s.on("data", (chunk) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      tryParse();
    });
    s.on("close", () => {
      socket = null;
      if (waiting) {
        const w = waiting;
        waiting = null;
        w.reject(new Error("connection closed by the Runtime API"));
      }
    });
  });
}

function tryParse() {
  if (!waiting) return;
  const end = buffered.indexOf("\r\n\r\n");
  if (end < 0) return;
  const head = buffered.subarray(0, end).toString("latin1").split("\r\n");
  const status = Number(head[0].split(" ")[1]);
  const headers = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const length = Number(headers["content-length"] || 0);
  if (buffered.length < end + 4 + length) return;
  const body = buffered.subarray(end + 4, end + 4 + length);
  buffered = buffered.subarray(end + 4 + length);
  const w = waiting;
  waiting = null;
  w.resolve({ status, headers, body });
}

async function request(method, urlPath, body, headers) {
  for (let attempt = 0; ; attempt++) {
    const reused = socket !== null;
    if (!reused) {
      socket = await connect();
      buffered = Buffer.alloc(0);
    }
    const payload = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body);
    let head = `${method} ${urlPath} HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\nContent-Length: ${payload.length}\r\n`;
    for (const [k, v] of Object.entries(headers || {})) head += `${k}: ${v}\r\n`;
    try {
      // Referenced only while a request is in flight: an idle connection must not keep the
      // event loop alive, or callback handlers would never see it empty (beforeExit).
      socket.ref();
      const res = await new Promise((resolve, reject) => {
        waiting = { resolve, reject };
        socket.write(head + "\r\n");
        if (payload.length) socket.write(payload);
      });
      if (socket) socket.unref();
      return res;
    } catch (e) {
      if (socket) socket.destroy();
      socket = null;
      // A kept-alive connection the server closed meanwhile: try once on a new one.
      if (attempt > 0 || !reused) throw e;
    }
  }
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

// --- response streaming -----------------------------------------------------------------------
//
// `awslambda.streamifyResponse(handler)` marks a handler that writes its response to a stream:
// it is called as `handler(event, responseStream, context)`, and what it writes goes to the
// Runtime API as it is written (`Lambda-Runtime-Function-Response-Mode: streaming`, chunked,
// errors after the first byte as trailers). `awslambda.HttpResponseStream.from(stream,
// {statusCode, headers, cookies})` prefixes the HTTP metadata for function URLs.

const STREAMING = Symbol.for("aws.lambda.runtime.handler.streaming");
const HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response";

class HttpResponseStream {
  static from(underlying, prelude) {
    underlying.setContentType(HTTP_INTEGRATION);
    underlying.write(JSON.stringify(prelude || {}));
    underlying.write(Buffer.alloc(8));
    return underlying;
  }
}

globalThis.awslambda = {
  streamifyResponse(handler, options) {
    handler[STREAMING] = "response";
    if (options) handler.streamOptions = options;
    return handler;
  },
  HttpResponseStream,
};

async function invokeStreaming(handler, id, event, context) {
  const { Writable } = require("node:stream");
  const { finished } = require("node:stream/promises");
  if (socket === null) {
    socket = await connect();
    buffered = Buffer.alloc(0);
  }
  socket.ref();
  const conn = socket;
  let contentType = "application/octet-stream";
  let headSent = false;
  const sendHead = () => {
    if (headSent) return;
    headSent = true;
    conn.write(
      `POST ${BASE}/invocation/${id}/response HTTP/1.1\r\nHost: ${HOST}:${PORT}\r\n` +
        "Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n" +
        "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n" +
        `Content-Type: ${contentType}\r\n\r\n`,
    );
  };
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      sendHead();
      if (!chunk.length) return callback();
      conn.write(chunk.length.toString(16) + "\r\n");
      conn.write(chunk);
      if (conn.write("\r\n")) callback();
      else conn.once("drain", () => callback());
    },
  });
  stream.setContentType = (ct) => {
    contentType = ct;
  };
  const answered = new Promise((resolve, reject) => {
    waiting = { resolve, reject };
  });
  // Until the last chunk is written, a reply would be premature: keep it from resolving early.
  let failure = null;
  try {
    await handler(event, stream, context);
    if (!stream.writableEnded) stream.end();
    await finished(stream);
  } catch (e) {
    failure = e;
  }
  if (failure && !headSent) {
    // Nothing was sent yet: report it as an ordinary error.
    waiting = null;
    console.error("Invoke Error", "\t" + JSON.stringify(toLogged(failure)));
    await postError(`${BASE}/invocation/${id}/error`, failure);
    return;
  }
  sendHead();
  if (failure) {
    console.error("Invoke Error", "\t" + JSON.stringify(toLogged(failure)));
    const rapid = toRapid(failure);
    const body = Buffer.from(JSON.stringify(rapid)).toString("base64");
    conn.write(`0\r\nLambda-Runtime-Function-Error-Type: ${rapid.errorType}\r\nLambda-Runtime-Function-Error-Body: ${body}\r\n\r\n`);
  } else {
    conn.write("0\r\n\r\n");
  }
  await answered;
  if (socket) socket.unref();
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
    if (handler[STREAMING] === "response") {
      invokeStreaming(handler, id, event, context).then(resolveInvoke, (e) => {
        process.stdout.write(`failed to stream the response: ${e}\n`);
        process.exit(1);
      });
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

main().catch((e) => {
  process.stdout.write(`the Node.js runtime failed: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
