"""The local stack: MLflow, the Prefect server and workers run by supervisord on 127.0.0.1, and commands
against it. A service.
"""
