"""What every service shares, in layers that import only downwards (tests/test_layers.py):

- `domain/`: the types the stages hand each other (Speech, ExpressionTrack, the ARKit-52 and motion
  vocabularies, captions, audio bytes) and InputError.
- `script/`: the script language (emotion and motion tags, pauses, SSML, auto emotion and motions).
- `live/`: a live session's pacing, text-as-it-is-written and listening behaviour.
- `infra/`: configuration, gRPC (servers, clients, rich errors), inference clients, object storage,
  tracing, deadlines and the domain <-> proto conversions (`wire`).
The API's generated code is not here: it is `likeness_client.proto` (clients/python/, the client
package, generated from protos/ by services/devtools/protogen.py), one copy for the client and the
services alike.

Nothing here imports a service package (tts, expression, render, gateway, pipeline). Tools that only
development and tests need (local servers, the code generator) live in services/devtools/.
"""
