"""Django's WSGI handler for the course's project: ``gunicorn course_django.wsgi`` or ``app.Server(application)``."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "course_django.settings")
application = get_wsgi_application()
