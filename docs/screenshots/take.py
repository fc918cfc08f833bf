# Takes the README screenshots: start the app (debug or release) on 127.0.0.1:18095 with
# ADMIN_PASSWORD=demo-password-1 SANDBOX_AUTO_APPROVE_MS=0, then: python3 docs/screenshots/take.py
# Needs Debian chromium + chromium-driver and `pip install selenium`.
import json, time, urllib.request, urllib.parse, re
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.common.by import By

B = "http://127.0.0.1:18095"
def post_json(path, body):
    req = urllib.request.Request(B + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
def post_form(url, fields):
    data = urllib.parse.urlencode(fields).encode()
    return urllib.request.urlopen(urllib.request.Request(url, data=data)).read().decode()

customers = [("Kim Minsu", "minsu@example.kr"), ("Jane Park", "jane@example.com"), ("Lee Jiwoo", "jiwoo@example.kr"), ("Alex Chen", "alex@example.com")]
skus = ["CERAMIC-MUG", "CLASSIC-TEE", "ZIP-HOODIE", "CANVAS-TOTE", "STICKER-PACK", "DOT-NOTEBOOK"]
made = []
for i in range(9):
    name, mail = customers[i % 4]
    o = post_json("/api/orders", {"items": [{"sku": skus[i % 6], "quantity": 1 + i % 3}], "currency": "KRW" if i % 3 else "USD",
        "payMethod": "wechat", "device": "pc", "customer": {"name": name, "email": mail, "phone": "01012345678", "address": "Seoul"}})
    made.append(o)
    if i % 4 == 3:
        continue  # left pending
    if i == 5:
        post_json("/sandbox/control/scenario", {"shopOrderNo": o["shopOrderNo"], "scenario": "approval_amount_mismatch"})
    page = post_form(B + "/sandbox/wechat/pay/" + o["pgCno"], {"action": "pay"})
    auth = re.search(r'name="authorizationId" value="([^"]+)"', page).group(1)
    post_form(B + "/checkout/return", {"resCd": "0000", "shopOrderNo": o["shopOrderNo"], "authorizationId": auth})
time.sleep(1)

opts = Options()
for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]:
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
d = webdriver.Chrome(options=opts)
try:
    d.get(B + "/admin/login")
    d.find_element(By.ID, "user").send_keys("admin")
    d.find_element(By.ID, "password").send_keys("demo-password-1")
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    time.sleep(0.5)
    # a partial cancel on the first paid order, to show it in the timeline
    paid = made[1]["shopOrderNo"]
    d.get(B + "/admin/orders/" + paid)
    d.find_element(By.ID, "amount").send_keys("5000")
    d.find_element(By.CSS_SELECTOR, ".cancel-form button").click()
    time.sleep(1)
    d.get(B + "/admin")
    d.save_screenshot("/work/main/docs/screenshots/dashboard-home.png")
    d.get(B + "/admin/orders")
    d.save_screenshot("/work/main/docs/screenshots/dashboard-orders.png")
    d.get(B + "/admin/orders/" + paid)
    d.set_window_size(1280, 1600)
    d.save_screenshot("/work/main/docs/screenshots/dashboard-order.png")
    d.set_window_size(1280, 1000)
    d.get(B + "/orders/" + made[3]["shopOrderNo"])
    d.save_screenshot("/work/main/docs/screenshots/shop-qr.png")
finally:
    d.quit()
print("ok")
