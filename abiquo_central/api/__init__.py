"""The Abiquo REST API over HTTP: representations, links, paging, errors, auth, resources.

Adding a resource: write abiquo_central/api/resources/<name>.py with its model (an
Entity subclass naming its media types), a `to_model` from the domain object, handlers
declared with `@endpoint(produces=..., privileges=...)` that parse, call the domain
function and `render`/`render_collection`, and `add_routes(router)`; then call that
`add_routes` from build_api in app.py.
"""

from abiquo_central.api.app import build_api
from abiquo_central.api.keys import CLOCK, ENGINE, PASSWORDS, SETTINGS

__all__ = ["CLOCK", "ENGINE", "PASSWORDS", "SETTINGS", "build_api"]
