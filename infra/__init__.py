"""The CDK app (``app.py``) that builds the same stack as ``template.yaml`` (``heron_stack.py``)."""
