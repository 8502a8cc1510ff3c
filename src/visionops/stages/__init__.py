"""The pipeline's stages, one module per dvc.yaml stage (plus predict and export): each reads its inputs,
calls the layers below and writes typed outputs. A stage never imports another stage.
"""
