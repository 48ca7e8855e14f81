"""What the customer-facing pages take from the brand profile: CSS variables, the ways to reach a person as links,
and the widget's configuration. Every value is escaped for where it goes (CSS, HTML or JSON), so a profile can
never inject markup into the pages."""

from __future__ import annotations

import html
import json
import re

from pydantic import BaseModel

from colbert_att_assistant.assistant.brand import BrandProfile

# A CSS value from the profile may hold colours, names, quotes, commas and spaces, but nothing that could end the
# declaration or the style element.
_SAFE_CSS = re.compile(r"^[#\w\s,.'\"()%+-]*$")


class ContactAction(BaseModel):
    """One way to reach a person: a link (tel:, mailto:, https:) or, for opening hours, plain text."""

    kind: str  # phone, email, live_chat, help
    label: str
    href: str | None = None


def css_value(value: str, fallback: str) -> str:
    return value if _SAFE_CSS.match(value) and "</" not in value else fallback


def brand_css(brand: BrandProfile) -> str:
    """`:root` custom properties for the pages' stylesheet."""
    style = brand.style
    values = {
        "--brand-primary": css_value(style.primary_colour, "#1f1f1f"),
        "--brand-on-primary": css_value(style.on_primary_colour, "#ffffff"),
        "--brand-accent": css_value(style.accent_colour, "#8a6d3b"),
        "--brand-background": css_value(style.background_colour, "#ffffff"),
        "--brand-text": css_value(style.text_colour, "#1f1f1f"),
        "--brand-font": css_value(style.typeface, "Georgia, serif"),
    }
    return ":root{" + ";".join(f"{name}:{value}" for name, value in values.items()) + "}"


def tel_href(phone: str) -> str:
    """`tel:` wants the number without spaces or punctuation other than a leading +."""
    digits = re.sub(r"[^\d+]", "", phone)
    return "tel:" + digits[:1] + digits[1:].replace("+", "")


def contact_actions(brand: BrandProfile) -> list[ContactAction]:
    contacts = brand.contacts
    actions = []
    if contacts.phone:
        actions.append(ContactAction(kind="phone", label=f"Call {contacts.phone}", href=tel_href(contacts.phone)))
    if contacts.email:
        actions.append(ContactAction(kind="email", label=f"Email {contacts.email}", href=f"mailto:{contacts.email}"))
    if contacts.live_chat_hours:
        actions.append(ContactAction(kind="live_chat", label=f"Live chat with an advisor: {contacts.live_chat_hours}"))
    if contacts.help_url and contacts.help_url.startswith(("https://", "http://")):
        actions.append(ContactAction(kind="help", label="Help centre", href=contacts.help_url))
    return actions


def contact_html(brand: BrandProfile) -> str:
    """The "talk to a person" list: real links where there is one."""
    items = []
    for action in contact_actions(brand):
        label = html.escape(action.label)
        if action.href:
            target = " target='_blank' rel='noopener'" if action.kind == "help" else ""
            href = html.escape(action.href)
            items.append(f"<li><a class='contact contact-{action.kind}' href='{href}'{target}>{label}</a></li>")
        else:
            items.append(f"<li class='contact contact-{action.kind}'>{label}</li>")
    return "<ul class='contacts'>" + "".join(items) + "</ul>"


def monogram(brand: BrandProfile) -> str:
    """The first capital letter of the house's name, for a brand mark without a logo."""
    for character in brand.name:
        if character.isupper():
            return character
    return brand.name[:1].upper()


def logo_html(brand: BrandProfile) -> str:
    logo = brand.style.logo_url
    if logo and logo.startswith(("https://", "http://", "/")):
        return f"<img class='logo' src='{html.escape(logo)}' alt='' width='32' height='32'>"
    return f"<span class='logo monogram' aria-hidden='true'>{html.escape(monogram(brand))}</span>"


def widget_config(brand: BrandProfile) -> dict:
    """What panel.js and widget.js need, as JSON (embedded in the page, never executed as code)."""
    strings = brand.strings
    return {
        "name": brand.name,
        "title": strings.page_title,
        "launcher_label": strings.launcher_label,
        "examples": strings.examples,
        "sources_heading": strings.sources_heading,
        "feedback_question": strings.feedback_question,
        "feedback_thanks": strings.feedback_thanks,
        "talk_to_person": strings.talk_to_person,
        "contacts": [action.model_dump() for action in contact_actions(brand)],
        "style": {
            "primary": css_value(brand.style.primary_colour, "#1f1f1f"),
            "on_primary": css_value(brand.style.on_primary_colour, "#ffffff"),
            "font": css_value(brand.style.typeface, "Georgia, serif"),
            "monogram": monogram(brand),
        },
    }


def json_for_html(data: object) -> str:
    """JSON that is safe inside a <script type="application/json"> element."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
