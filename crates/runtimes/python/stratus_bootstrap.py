"""Stratus's Python runtime: a Lambda Runtime API client that runs a Python handler.

It behaves like AWS's own Python runtime (awslambdaric): the same handler strings
(`module.function`, `dir/module.function`), the same context object, the same error JSON
(`errorMessage`, `errorType`, `requestId`, `stackTrace`), the same log line formats, and the
same init errors (`Runtime.ImportModuleError`, `Runtime.HandlerNotFound`, ...).

Start-up cost matters (it is part of every cold start), so this file imports only what it
needs and speaks HTTP/1.1 over one kept-alive socket itself instead of importing http.client.
"""

import _socket
import json
import os
import sys
import time

RUNTIME_PATH = "/2018-06-01/runtime"
_current_request_id = ""


class FaultError(Exception):
    """A failure the runtime reports with a Lambda error type (`Runtime.*`)."""

    def __init__(self, error_type, message, trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace or []


class RuntimeClient:
    """A minimal HTTP/1.1 client for the Runtime API over one kept-alive connection.

    It uses the `_socket` C module directly: `socket.py` would add milliseconds to every cold
    start for features this client does not need."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = (host, int(port))
        self.host = address
        self.sock = None
        self.buf = b""

    def _connect(self):
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        sock.connect(self.address)
        self.sock = sock
        self.buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the Runtime API")
        self.buf += chunk

    def _readline(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line, self.buf = self.buf[: i + 1], self.buf[i + 1 :]
                return line
            self._fill()

    def _read(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def request(self, method, path, body=b"", headers=None):
        for attempt in (0, 1):
            reused = self.sock is not None
            if not reused:
                self._connect()
            try:
                head = "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n" % (method, path, self.host, len(body))
                if headers:
                    for k, v in headers.items():
                        head += "%s: %s\r\n" % (k, v)
                head = (head + "\r\n").encode("latin-1")
                if len(body) < 65536:
                    self.sock.sendall(head + body)
                else:
                    self.sock.sendall(head)
                    self.sock.sendall(body)
                return self._read_response()
            except OSError:
                self.close()
                # A kept-alive connection the server closed meanwhile: try once on a new one.
                if attempt or not reused:
                    raise
        raise ConnectionError("unreachable")

    def _read_response(self):
        status = int(self._readline().split()[1])
        headers = {}
        while True:
            line = self._readline()
            if line in (b"\r\n", b"\n"):
                break
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = self._read(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self._readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self._readline() not in (b"\r\n", b"\n"):
                        pass
                    break
                chunks.append(self._read(size))
                self._readline()
            body = b"".join(chunks)
        else:
            chunks = [self.buf]
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
            body = b"".join(chunks)
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def next(self):
        return self.request("GET", RUNTIME_PATH + "/invocation/next")

    def post_response(self, request_id, body, content_type):
        return self.request(
            "POST", "%s/invocation/%s/response" % (RUNTIME_PATH, request_id), body, {"Content-Type": content_type}
        )

    def post_error(self, request_id, error):
        body = json.dumps(error).encode()
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error["errorType"]}
        return self.request("POST", "%s/invocation/%s/error" % (RUNTIME_PATH, request_id), body, headers)

    def post_init_error(self, error):
        body = json.dumps(error).encode()
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": error["errorType"]}
        return self.request("POST", RUNTIME_PATH + "/init/error", body, headers)


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, raw):
        self.cognito_identity_id = raw.get("cognitoIdentityId") if raw else None
        self.cognito_identity_pool_id = raw.get("cognitoIdentityPoolId") if raw else None

    def __repr__(self):
        return "CognitoIdentity([cognito_identity_id=%s,cognito_identity_pool_id=%s])" % (
            self.cognito_identity_id,
            self.cognito_identity_pool_id,
        )


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, raw):
        self.installation_id = raw.get("installation_id")
        self.app_title = raw.get("app_title")
        self.app_version_name = raw.get("app_version_name")
        self.app_version_code = raw.get("app_version_code")
        self.app_package_name = raw.get("app_package_name")


class ClientContext:
    __slots__ = ("custom", "env", "client")

    def __init__(self, raw):
        self.custom = raw.get("custom")
        self.env = raw.get("env")
        self.client = Client(raw["client"]) if raw.get("client") else None


class LambdaContext:
    """The `context` argument of a handler, as AWS's Python runtime builds it."""

    def __init__(self, request_id, deadline_ms, invoked_function_arn, client_context, cognito_identity, tenant_id):
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.identity = CognitoIdentity(cognito_identity)
        self.client_context = ClientContext(client_context) if client_context else None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, msg):
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (
            "LambdaContext([aws_request_id=%s,log_group_name=%s,log_stream_name=%s,function_name=%s,"
            "memory_limit_in_mb=%s,function_version=%s,invoked_function_arn=%s,client_context=%s,identity=%s])"
            % (
                self.aws_request_id,
                self.log_group_name,
                self.log_stream_name,
                self.function_name,
                self.memory_limit_in_mb,
                self.function_version,
                self.invoked_function_arn,
                self.client_context,
                self.identity,
            )
        )


_logging_configured = False


def configure_logging():
    """Gives the root logger Lambda's line format, once the function has imported logging."""
    global _logging_configured
    if _logging_configured or "logging" not in sys.modules:
        return
    _logging_configured = True
    import logging

    class RequestIdFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _current_request_id
            return True

    class LambdaHandler(logging.Handler):
        def emit(self, record):
            try:
                msg = self.format(record)
                # One log event per record, as on AWS: inner newlines become carriage returns.
                sys.stdout.write(msg.rstrip("\n").replace("\n", "\r") + "\n")
            except Exception:
                self.handleError(record)

    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler = LambdaHandler()
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    if level:
        root.setLevel(level.upper())


def stack_of(tb):
    import traceback

    frames = traceback.extract_tb(tb)
    # Drop the runtime's own frames that lead into the user's code.
    while frames and (frames[0].filename.endswith("/stratus_bootstrap.py") or frames[0].filename.endswith("/bootstrap.py")):
        frames.pop(0)
    # 4-tuples, so no column carets: the format AWS's runtime prints.
    return traceback.format_list([(f.filename, f.lineno, f.name, f.line) for f in frames])


def make_error(error_type, message, trace, request_id):
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": trace}


def error_of(exc, request_id):
    if isinstance(exc, FaultError):
        return make_error(exc.error_type, exc.message, exc.trace, request_id)
    return make_error(type(exc).__name__, str(exc), stack_of(exc.__traceback__), request_id)


def log_error(error):
    parts = ["[ERROR]"]
    if error.get("errorType"):
        parts.append(" " + error["errorType"])
        if error.get("errorMessage"):
            parts.append(":")
    if error.get("errorMessage"):
        parts.append(" " + error["errorMessage"])
    lines = ["".join(parts), "Traceback (most recent call last):"]
    for entry in error.get("stackTrace") or []:
        for line in entry.rstrip("\n").split("\n"):
            stripped = line.lstrip(" ")
            lines.append("\u00a0" * (len(line) - len(stripped)) + stripped)
    sys.stdout.write("\r".join(lines) + "\n")


def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as e:
        raise FaultError("Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (handler, e))
    if modname.split(".")[0] in sys.builtin_module_names:
        raise FaultError(
            "Runtime.BuiltInModuleConflict", "Cannot use built-in module %s as a handler module" % modname
        )
    import importlib

    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as e:
        raise FaultError("Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, e))
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise FaultError("Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, e), trace)
    try:
        return getattr(module, fname)
    except AttributeError:
        raise FaultError("Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname))


def setup_path(task_root):
    # The runtime's own directory must not shadow the function's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    extra = [task_root]
    opt = os.environ.get("STRATUS_OPT_DIR", "/opt")
    for p in (
        os.path.join(opt, "python"),
        os.path.join(opt, "python/lib/python%d.%d/site-packages" % sys.version_info[:2]),
    ):
        if os.path.isdir(p):
            extra.append(p)
    sys.path[0:0] = extra


def invoke(client, handler, status, headers, body):
    global _current_request_id
    request_id = headers.get("lambda-runtime-aws-request-id", "")
    _current_request_id = request_id
    trace_id = headers.get("lambda-runtime-trace-id")
    if trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    configure_logging()
    try:
        client_context = None
        cognito = None
        try:
            raw = headers.get("lambda-runtime-client-context")
            client_context = json.loads(raw) if raw else None
        except ValueError as e:
            raise FaultError("Runtime.LambdaContextUnmarshalError", "Unable to parse Client Context JSON: %s" % e)
        try:
            raw = headers.get("lambda-runtime-cognito-identity")
            cognito = json.loads(raw) if raw else None
        except ValueError as e:
            raise FaultError("Runtime.LambdaContextUnmarshalError", "Unable to parse Cognito Identity JSON: %s" % e)
        if headers.get("content-type", "application/json").startswith("application/json"):
            try:
                event = json.loads(body)
            except ValueError as e:
                raise FaultError("Runtime.UnmarshalError", "Unable to unmarshal input: %s" % e)
        else:
            event = body
        context = LambdaContext(
            request_id,
            int(headers.get("lambda-runtime-deadline-ms", "0")),
            headers.get("lambda-runtime-invoked-function-arn"),
            client_context,
            cognito,
            headers.get("lambda-runtime-aws-tenant-id"),
        )
        result = handler(event, context)
        if isinstance(result, (bytes, bytearray)):
            payload, content_type = bytes(result), "application/unknown"
        else:
            try:
                payload, content_type = json.dumps(result).encode(), "application/json"
            except (TypeError, ValueError) as e:
                raise FaultError("Runtime.MarshalError", "Unable to marshal response: %s" % e)
    except Exception as e:  # the function's error, reported to the caller
        error = error_of(e, request_id)
        log_error(error)
        client.post_error(request_id, error)
        return
    client.post_response(request_id, payload, content_type)


def main():
    client = RuntimeClient(os.environ["AWS_LAMBDA_RUNTIME_API"])
    task_root = os.environ.get("LAMBDA_TASK_ROOT", "/var/task")
    setup_path(task_root)
    try:
        os.chdir(task_root)
    except OSError:
        pass
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
        configure_logging()
    except Exception as e:
        error = error_of(e, "")
        log_error(error)
        client.post_init_error(error)
        sys.exit(1)
    while True:
        status, headers, body = client.next()
        if status != 200:
            sys.stdout.write("the Runtime API refused the next invocation (HTTP %d); exiting\n" % status)
            sys.exit(1)
        invoke(client, handler, status, headers, body)
