from django.http import JsonResponse


def threads(request):
    return JsonResponse({})


def thread_detail(request, thread_id):
    return JsonResponse({})
