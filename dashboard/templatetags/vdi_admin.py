"""The admin's list actions as buttons on a change page too, where an admin looks for them:
each posts to the list's own action machinery with just this object selected, so the action,
its permission check and its messages are exactly the list's."""

from django import template
from django.contrib.admin import helpers
from django.urls import reverse

register = template.Library()


@register.inclusion_tag("admin/dashboard/change_page_actions.html", takes_context=True)
def change_page_actions(context):
    request, original, adminform = context.get("request"), context.get("original"), context.get("adminform")
    if request is None or original is None or adminform is None or not original.pk:
        return {"buttons": []}
    model_admin = adminform.model_admin
    opts = model_admin.model._meta
    buttons = [{"name": name, "label": description}
               for name, (_func, _name, description) in model_admin.get_actions(request).items()
               if name != "delete_selected"]
    return {
        "buttons": buttons, "pk": original.pk, "csrf_token": context.get("csrf_token"),
        "checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
    }
