"""connector-python: an ecma.v1 connector written in Python with grpcio, provisioning users into a
JSON file. The walk-through in docs/connector-protocol.md ("Write your own connector") follows it.

It keeps the process contract (docs/connector-protocol.md): it listens on the Unix socket named
in ECMA_SOCKET (and prints nothing on stdout: readiness is the supervisor's Hello), refuses calls
without the per-spawn token from ECMA_TOKEN, serves grpc.health.v1, and stops on SIGTERM or when
its supervisor (ECMA_SUPERVISOR_PID) is no longer its parent. Errors travel as the result's
error kind (export) or as a status with the `ecma-error-kind` metadata (calls).

Run it through ./connector-python (which sets up its venv with examples/connector-python/setup.sh).
"""

import json
import logging
import os
import signal
import sys
import threading
import uuid
from concurrent import futures

sys.path.insert(0, os.path.join(sys.prefix, "stubs"))

import grpc  # noqa: E402
from grpc_health.v1 import health, health_pb2, health_pb2_grpc  # noqa: E402

from ecma.v1 import connector_pb2 as pb  # noqa: E402
from ecma.v1 import connector_pb2_grpc as rpc  # noqa: E402

PROTOCOL_VERSIONS = [1]
TOKEN_METADATA = "x-ecma-token"
ERROR_KIND_METADATA = "ecma-error-kind"
ANCHOR = "id"
# The schema: attribute name -> (type, multi-valued, required).
ATTRIBUTES = {
    "userName": (pb.ATTRIBUTE_TYPE_STRING, False, True),
    "displayName": (pb.ATTRIBUTE_TYPE_STRING, False, False),
    "email": (pb.ATTRIBUTE_TYPE_STRING, False, False),
    "active": (pb.ATTRIBUTE_TYPE_BOOLEAN, False, False),
}
PARAMETERS = [
    pb.ConfigParameterDefinition(
        name="file",
        type=pb.CONFIG_PARAMETER_TYPE_STRING,
        required=True,
        description="The JSON file that holds the users (created when missing; its directory must exist)",
    ),
]

log = logging.getLogger("connector-python")


def abort(context, code, kind, message):
    """Ends a call with a status that carries the protocol's error kind."""
    context.set_trailing_metadata(((ERROR_KIND_METADATA, pb.ErrorKind.Name(kind)),))
    context.abort(code, message)


def to_value(value):
    if isinstance(value, bool):
        return pb.Value(boolean_value=value)
    if isinstance(value, int):
        return pb.Value(integer_value=value)
    return pb.Value(string_value=str(value))


def from_value(value):
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind else None


class Users:
    """The target: users by anchor in one JSON file, rewritten whole (atomically) per batch."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def load(self):
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def save(self, users):
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(users, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def entry_of(anchor, attributes):
    return pb.Entry(
        object_type="user",
        anchors=[pb.Anchor(name=ANCHOR, value=pb.Value(string_value=anchor))],
        attributes=[
            pb.AttributeValues(name=name, values=[to_value(v) for v in values])
            for name, values in sorted(attributes.items())
            if values
        ],
        partition_id="default",
    )


def same_name(a, b):
    return isinstance(a, str) and isinstance(b, str) and a.casefold() == b.casefold()


class Connector(rpc.ConnectorServicer):
    def __init__(self):
        self.exports = {}
        self.imports = {}
        self.sessions = threading.Lock()

    def users(self, config, context):
        path = config.values.get("file", "") if config else ""
        if not path:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_INVALID_CONFIGURATION, "file is required")
        return Users(path)

    def Hello(self, request, context):
        common = [v for v in PROTOCOL_VERSIONS if v in request.supported_protocol_versions]
        if not common:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no common protocol version: the supervisor speaks {list(request.supported_protocol_versions)}, "
                f"this connector {PROTOCOL_VERSIONS}",
            )
        return pb.HelloResponse(
            protocol_version=max(common),
            connector_name="connector-python",
            connector_version="0.1.0",
            capabilities=pb.Capabilities(
                distinguished_name_style=pb.DISTINGUISHED_NAME_STYLE_NONE,
                export_type=pb.EXPORT_TYPE_ATTRIBUTE_UPDATE,
                object_confirmation=pb.OBJECT_CONFIRMATION_NORMAL,
                concurrent_operation=True,
                supports_lookup=True,
                supports_import=True,
                supports_export=True,
                export_batch_size=100,
                import_max_page_size=1000,
            ),
        )

    def GetConfigParameters(self, request, context):
        return pb.GetConfigParametersResponse(parameters=PARAMETERS)

    def ValidateConfiguration(self, request, context):
        path = request.config.values.get("file", "")
        problems = []
        if not path:
            problems.append(pb.ConfigProblem(parameter="file", message="file is required: the JSON file that holds the users",
                                             kind=pb.ERROR_KIND_INVALID_CONFIGURATION))
        elif not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            problems.append(pb.ConfigProblem(parameter="file", message=f"the directory of {path} does not exist",
                                             kind=pb.ERROR_KIND_INVALID_CONFIGURATION))
        else:
            try:
                Users(path).load()
            except (OSError, ValueError) as e:
                problems.append(pb.ConfigProblem(parameter="file", message=f"{path} cannot be read as JSON: {e}",
                                                 kind=pb.ERROR_KIND_INVALID_CONFIGURATION))
        return pb.ValidateConfigurationResponse(problems=problems)

    def GetSchema(self, request, context):
        attributes = [
            pb.SchemaAttribute(name=name, type=kind, multi_valued=multi, required=required,
                               operation=pb.ATTRIBUTE_OPERATION_IMPORT_EXPORT)
            for name, (kind, multi, required) in ATTRIBUTES.items()
        ]
        return pb.GetSchemaResponse(schema=pb.Schema(types=[pb.SchemaType(name="user", attributes=attributes)]))

    def GetPartitions(self, request, context):
        return pb.GetPartitionsResponse(partitions=[pb.Partition(id="default", name="default")])

    # Export.

    def OpenExportConnection(self, request, context):
        if request.object_type not in ("", "user"):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_KIND_UNSUPPORTED,
                  f"object type {request.object_type!r}: this connector serves user")
        session = str(uuid.uuid4())
        with self.sessions:
            self.exports[session] = self.users(request.config, context)
        return pb.OpenExportConnectionResponse(session_id=session)

    def PutExportEntries(self, request, context):
        with self.sessions:
            users = self.exports.get(request.session_id)
        if users is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no such session {request.session_id!r}")
        with users.lock:
            all_users = users.load()
            results = [self.apply(all_users, change) for change in request.entries]
            users.save(all_users)
        return pb.PutExportEntriesResponse(results=results)

    def apply(self, users, change):
        def result(kind=pb.ERROR_KIND_NONE, detail="", anchors=()):
            return pb.CsEntryChangeResult(identifier=change.identifier, error_kind=kind, error_detail=detail,
                                          anchors=list(anchors))

        unknown = [c.name for c in change.attribute_changes if c.name not in ATTRIBUTES]
        if unknown:
            return result(pb.ERROR_KIND_SCHEMA_VIOLATION, f"not attributes of user: {unknown}")
        anchor = from_value(change.anchors[0].value) if change.anchors else None
        if change.modification_type == pb.OBJECT_MODIFICATION_TYPE_ADD:
            attributes = {c.name: [from_value(v) for v in c.value_adds] for c in change.attribute_changes}
            name = (attributes.get("userName") or [None])[0]
            if not name:
                return result(pb.ERROR_KIND_INVALID_ATTRIBUTE_VALUE, "userName is required")
            for existing, values in users.items():
                if same_name((values.get("userName") or [None])[0], name):
                    return result(pb.ERROR_KIND_ALREADY_EXISTS, f"userName {name!r} is taken (id {existing})")
            anchor = str(uuid.uuid4())
            users[anchor] = {k: v for k, v in attributes.items() if v}
            return result(anchors=[pb.Anchor(name=ANCHOR, value=pb.Value(string_value=anchor))])
        if anchor not in users:
            return result(pb.ERROR_KIND_NO_SUCH_OBJECT, f"no user with id {anchor!r}")
        if change.modification_type == pb.OBJECT_MODIFICATION_TYPE_DELETE:
            del users[anchor]
            return result()
        if change.modification_type not in (pb.OBJECT_MODIFICATION_TYPE_UPDATE, pb.OBJECT_MODIFICATION_TYPE_REPLACE):
            return result(pb.ERROR_KIND_UNSUPPORTED, "only add, update, replace and delete")
        current = dict(users[anchor])
        if change.modification_type == pb.OBJECT_MODIFICATION_TYPE_REPLACE:
            current = {}
        for c in change.attribute_changes:
            adds = [from_value(v) for v in c.value_adds]
            deletes = [from_value(v) for v in c.value_deletes]
            values = current.get(c.name, [])
            if c.modification_type in (pb.ATTRIBUTE_MODIFICATION_TYPE_REPLACE, pb.ATTRIBUTE_MODIFICATION_TYPE_ADD):
                values = adds if c.modification_type == pb.ATTRIBUTE_MODIFICATION_TYPE_REPLACE else values + adds
            elif c.modification_type == pb.ATTRIBUTE_MODIFICATION_TYPE_DELETE:
                values = [v for v in values if v not in deletes] if deletes else []
            else:  # UPDATE: value adds and deletes
                values = [v for v in values if v not in deletes] + [v for v in adds if v not in values]
            current[c.name] = values
        name = (current.get("userName") or [None])[0]
        if not name:
            return result(pb.ERROR_KIND_INVALID_ATTRIBUTE_VALUE, "userName is required")
        for other, values in users.items():
            if other != anchor and same_name((values.get("userName") or [None])[0], name):
                return result(pb.ERROR_KIND_ALREADY_EXISTS, f"userName {name!r} is taken (id {other})")
        users[anchor] = {k: v for k, v in current.items() if v}
        return result()

    def CloseExportConnection(self, request, context):
        with self.sessions:
            self.exports.pop(request.session_id, None)
        return pb.CloseExportConnectionResponse()

    # Import: a snapshot at open, paged by anchor.

    def OpenImportConnection(self, request, context):
        users = self.users(request.config, context)
        with users.lock:
            snapshot = sorted(users.load().items())
        session = str(uuid.uuid4())
        page = min(max(request.page_size or 500, 1), 1000)
        with self.sessions:
            self.imports[session] = {"entries": snapshot, "at": 0, "page": page}
        return pb.OpenImportConnectionResponse(session_id=session)

    def GetImportEntries(self, request, context):
        with self.sessions:
            state = self.imports.get(request.session_id)
            if state is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no such session {request.session_id!r}")
            start, end = state["at"], state["at"] + state["page"]
            state["at"] = end
        page = state["entries"][start:end]
        return pb.GetImportEntriesResponse(
            entries=[pb.ImportEntry(modification_type=pb.OBJECT_MODIFICATION_TYPE_ADD, entry=entry_of(a, v))
                     for a, v in page],
            more_to_import=end < len(state["entries"]),
        )

    def CloseImportConnection(self, request, context):
        with self.sessions:
            self.imports.pop(request.session_id, None)
        return pb.CloseImportConnectionResponse()

    def LookupEntries(self, request, context):
        users = self.users(request.config, context)
        with users.lock:
            all_users = users.load()
        which = request.WhichOneof("by")
        if which == "anchor":
            anchor = from_value(request.anchor.value)
            found = [(anchor, all_users[anchor])] if anchor in all_users else []
        elif which == "attribute":
            wanted = [from_value(v) for v in request.attribute.values]
            name = request.attribute.name
            found = [
                (a, v) for a, v in all_users.items()
                if any(same_name(x, w) if name == "userName" else x == w for x in v.get(name, []) for w in wanted)
            ]
        else:
            found = []
        return pb.LookupEntriesResponse(entries=[entry_of(a, v) for a, v in found])


class TokenCheck(grpc.ServerInterceptor):
    """Refuses a call without the per-spawn token (health checks included, as the SDK's do not)."""

    def __init__(self, token):
        self.token = token.encode()

        def refuse(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong per-spawn token")

        self.refusal = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, details):
        import hmac

        given = dict(details.invocation_metadata).get(TOKEN_METADATA, "")
        if details.method.startswith("/grpc.health.") or hmac.compare_digest(given.encode(), self.token):
            return continuation(details)
        return self.refusal


def main():
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
    # A process contract it cannot work with is a bad configuration: exit 78 (EX_CONFIG), which
    # the supervisor does not restart in a loop.
    try:
        socket = os.environ["ECMA_SOCKET"]
        token = os.environ["ECMA_TOKEN"]
        supervisor = int(os.environ.get("ECMA_SUPERVISOR_PID", "0") or 0)
        versions = [int(v) for v in os.environ.get("ECMA_PROTOCOL_VERSIONS", "1").split(",")]
    except (KeyError, ValueError) as e:
        log.error("the supervisor's environment cannot be used (%s): this is a connector for the ECMA "
                  "supervisor, which sets ECMA_SOCKET, ECMA_TOKEN and the other variables", e)
        sys.exit(78)
    if not any(v in PROTOCOL_VERSIONS for v in versions):
        log.error("the supervisor speaks protocol versions %s, this connector %s", versions, PROTOCOL_VERSIONS)
        sys.exit(78)
    if os.path.exists(socket):
        os.unlink(socket)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), interceptors=[TokenCheck(token)])
    rpc.add_ConnectorServicer_to_server(Connector(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("ecma.v1.Connector", health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    os.chmod(socket, 0o600)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        if supervisor and os.getppid() != supervisor:
            log.warning("the supervisor is gone; exiting")
            break
    server.stop(grace=2).wait()
    if os.path.exists(socket):
        os.unlink(socket)


if __name__ == "__main__":
    main()
