"""The built-in secondary models: one module each, holding a SecondaryModel subclass (stages/infer/secondary_model.py)
that sets `kind`, the name a config gives (`secondary: [{name: signs, kind: sign_classifier, classes: [stop_sign]}]`),
with its Options and the columns it writes: a sign classifier, a posture model. Adding one is one new file here.

Built in: `light_state` (traffic-light state, red / yellow / green). A model of your own, outside the tree, is
named `package.module:Class` instead. Checking a
config imports the module its kind names (every module here when the name is not one), so a module imports
torch and loads its weights only in the code that builds and runs the model.
"""
