"""Testing helpers for apps that queue Afterword jobs: the gateway and the real job implementations
in the test's process, without Redis (``services.testing.plugin``, a pytest plugin).

``docs/client.md`` ("Testing your app") shows how to use them.
"""

from services.testing.afterword import InProcessAfterword
from services.testing.gateway import QueuedJob
from services.testing.mail import MailSink
from services.testing.worker import JobFailed, Run

__all__ = ["InProcessAfterword", "JobFailed", "MailSink", "QueuedJob", "Run"]
