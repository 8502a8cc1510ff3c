"""The only code that talks to MLflow: where runs go, their lineage, what the stages log, sweeps, the Model
Registry and its aliases, the model card and the served model. A service: it may use the building blocks.
"""
