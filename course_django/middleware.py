"""A failed view answers 500 with the error's class and code, as the course's app does (``app.py``),
instead of Django's blank "Server Error (500)" page: what the chapter's tables show."""
from django.http import HttpResponse


class ErrorPage:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        code = exception.args[0] if exception.args and isinstance(exception.args[0], int) else ""
        return HttpResponse(f"{type(exception).__name__} {code}", status=500, content_type="text/plain")
