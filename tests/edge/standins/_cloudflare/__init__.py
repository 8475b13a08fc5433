# =================================================================================================
# HARNESS STAND-IN, NOT CLOUDFLARE CODE: workerd's private `_cloudflare` package, as far as the
# Workers SDK (workers-runtime-sdk) uses it.
#
# In workerd, the SDK's `.pth` loader finds `_cloudflare` and imports the SDK's own package
# patches: the import patches that allow a known number of entropy calls while a package such as
# pydantic_core or fastapi is imported at top level (the memory snapshot), and the one that makes
# `anyio.to_thread.run_sync` run inline (a Worker has no threads). With this stand-in on the
# path, the harness runs those same patches, Cloudflare's code, the same way:
#
#   allow_entropy.py         allow_bad_entropy_calls(n): n calls to the random source allowed
#                            while the main module is imported (the harness's guard counts them)
#   import_patch_manager.py  register_*_patch / register_before_first_request / block_calls, and
#                            the meta path finder that runs a module's exec_module (or
#                            create_module) inside its registered context manager
#
# The harness installs the finder while it imports the worker's main module, removes it after,
# then runs the before-first-request handlers: the order workerd uses (snapshot, then requests).
# =================================================================================================
