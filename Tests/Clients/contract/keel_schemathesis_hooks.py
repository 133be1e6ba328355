"""schemathesis hooks for fuzzing Keel (SCHEMATHESIS_HOOKS=keel_schemathesis_hooks).

tus bodies are `application/offset+octet-stream`: plain bytes, serialized as
schemathesis serializes `application/octet-stream`.
"""

import schemathesis

schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
